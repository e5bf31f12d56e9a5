// Counter-based randomness for the data layer. Every random decision (an
// image's content, an epoch's order, a flip) is a pure function of the user's
// seed and *what* is decided (image k, epoch e, iteration i), never of thread
// scheduling, the number of workers or ranks, or what was generated before.
// Only fully specified algorithms are used (splitmix64, std::mt19937_64 and our
// own bounded draws, not std::*_distribution, whose output differs between
// standard libraries), so results are the same on every platform.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <random>

namespace maskrcnn::data {

// Domain tags keep the streams of different decisions apart for one seed.
enum class SeedDomain : uint64_t { ShapesImage = 0x5348, EpochOrder = 0x4550, Flip = 0x464c, Sampling = 0x5253 };

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t hash_values(SeedDomain domain, std::initializer_list<uint64_t> values) {
  uint64_t h = splitmix64(static_cast<uint64_t>(domain));
  for (uint64_t v : values) h = splitmix64(h ^ splitmix64(v));
  return h;
}

// Uniform in [0, 1) from the top 53 bits.
inline double unit_from_bits(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

inline double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * unit_from_bits(rng());
}

// Uniform integer in [lo, hi] (hi >= lo); the tiny modulo bias is irrelevant here.
inline int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(span == 0 ? rng() : rng() % span);
}

}  // namespace maskrcnn::data
