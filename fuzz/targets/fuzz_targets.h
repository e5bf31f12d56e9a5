// The fuzz targets: one function a parser of untrusted input. Each takes any
// bytes and must return normally or throw maskrcnn::Error; anything else (a
// crash, a sanitizer report, another exception escaping, a broken invariant
// -> abort) is a bug. libFuzzer drives them (fuzz/libfuzzer_main.cpp, built by
// scripts/fuzz.sh with clang), and tests/fuzz replays the seed corpora and every
// input in fuzz/regressions/ through them in the ordinary test suite.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace maskrcnn::fuzz {

// Both torch.save formats (zip and legacy pickle stream), then the state dict.
void checkpoint(const uint8_t* data, size_t size);
// A COCO instances file, then every annotation's mask as pycocotools' annToRLE.
void coco_annotations(const uint8_t* data, size_t size);
// A COCO results file against a small fixed ground truth, then masks and IoUs.
void coco_results(const uint8_t* data, size_t size);
// RLE strings and polygons: first byte picks the mode, two bytes each give h, w.
void rle(const uint8_t* data, size_t size);
// JPEG/PNG/other bytes through decode_image, at most 4 Mpixels.
void image(const uint8_t* data, size_t size);

struct Target {
  const char* name;
  void (*run)(const uint8_t*, size_t);
};
const std::vector<Target>& all_targets();

}  // namespace maskrcnn::fuzz
