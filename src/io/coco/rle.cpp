// COCO RLE masks: a C++ rewrite of pycocotools' maskApi.c with the same
// arithmetic (integer types, rounding and loop structure), so results are bit-exact.
#include "maskrcnn/rle.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "maskrcnn/error.h"

// pycocotools is built without fused multiply-add; keep a*b+c as two roundings.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace maskrcnn {

namespace {

void check_size(int h, int w) {
  if (h < 0 || w < 0) throw Error("rle_encode: negative mask size");
}

// A counts vector never empty (maskApi reads cnts[0] unconditionally).
const uint32_t* counts_or_zero(const std::vector<uint32_t>& counts, size_t& m) {
  static const uint32_t kZero = 0;
  m = counts.size();
  if (m == 0) {
    m = 1;
    return &kZero;
  }
  return counts.data();
}

// Runs with no empty run after the first, as every maskApi encoder writes them.
// The merge and IoU walks below stop as soon as both current runs are empty, so
// an empty run inside the list (a hand-made or foreign RLE) would end them early
// with a wrong answer; joining its two neighbours gives the same mask and
// changes nothing for canonical input. Returns `counts` itself when canonical.
const std::vector<uint32_t>& canonical_runs(const std::vector<uint32_t>& counts,
                                            std::vector<uint32_t>& scratch) {
  if (std::find(counts.begin() + std::min<size_t>(counts.size(), 1), counts.end(), 0u) == counts.end())
    return counts;
  scratch.assign(1, counts[0]);
  for (size_t j = 1; j < counts.size();) {
    if (counts[j] != 0) {
      scratch.push_back(counts[j++]);
      continue;
    }
    if (j + 1 < counts.size()) scratch.back() += counts[j + 1];  // same colour as back()
    j += 2;
  }
  return scratch;
}

}  // namespace

Rle rle_encode(const uint8_t* mask, int h, int w) {
  check_size(h, w);
  Rle r;
  r.h = static_cast<uint32_t>(h);
  r.w = static_cast<uint32_t>(w);
  uint32_t c = 0;
  uint8_t p = 0;
  if (h == 0 || w == 0) {  // no pixels (and mask may be null)
    r.counts.push_back(0);
    return r;
  }
  for (int x = 0; x < w; ++x) {
    const uint8_t* col = mask + x;
    for (int y = 0; y < h; ++y) {
      uint8_t v = col[static_cast<size_t>(y) * static_cast<size_t>(w)] ? 1 : 0;
      if (v != p) {
        r.counts.push_back(c);
        c = 0;
        p = v;
      }
      ++c;
    }
  }
  r.counts.push_back(c);
  return r;
}

Rle rle_encode_window(const uint8_t* window, int wh, int ww, int y0, int x0, int h, int w) {
  check_size(h, w);
  if (wh < 0 || ww < 0 || y0 < 0 || x0 < 0 || y0 + wh > h || x0 + ww > w)
    throw Error("rle_encode_window: the window is not inside the image");
  Rle r;
  r.h = static_cast<uint32_t>(h);
  r.w = static_cast<uint32_t>(w);
  uint32_t run = 0;  // the current run's length; its value alternates from 0
  uint8_t value = 0;
  auto extend = [&](uint8_t v, uint32_t n) {
    if (n == 0) return;
    if (v != value) {
      r.counts.push_back(run);
      run = 0;
      value = v;
    }
    run += n;
  };
  const uint32_t below = static_cast<uint32_t>(h - y0 - wh);
  for (int x = 0; x < w; ++x) {
    if (x < x0 || x >= x0 + ww || wh == 0) {
      extend(0, static_cast<uint32_t>(h));
      continue;
    }
    extend(0, static_cast<uint32_t>(y0));
    const uint8_t* col = window + (x - x0);
    for (int y = 0; y < wh; ++y) extend(col[static_cast<size_t>(y) * static_cast<size_t>(ww)] ? 1 : 0, 1);
    extend(0, below);
  }
  r.counts.push_back(run);
  return r;
}

Rle rle_encode_column_major(const uint8_t* mask, int h, int w) {
  check_size(h, w);
  Rle r;
  r.h = static_cast<uint32_t>(h);
  r.w = static_cast<uint32_t>(w);
  const size_t a = static_cast<size_t>(h) * static_cast<size_t>(w);
  uint32_t c = 0;
  uint8_t p = 0;
  for (size_t j = 0; j < a; ++j) {
    uint8_t v = mask[j] ? 1 : 0;
    if (v != p) {
      r.counts.push_back(c);
      c = 0;
      p = v;
    }
    ++c;
  }
  r.counts.push_back(c);
  return r;
}

uint64_t rle_total(const Rle& rle) {
  uint64_t s = 0;
  for (uint32_t c : rle.counts) s += c;
  return s;
}

std::vector<uint8_t> rle_decode_column_major(const Rle& rle) {
  const uint64_t a = static_cast<uint64_t>(rle.h) * rle.w;
  if (rle_total(rle) != a) throw Error("rle_decode: counts do not sum to h*w");
  std::vector<uint8_t> out(a);
  size_t p = 0;
  uint8_t v = 0;
  for (uint32_t c : rle.counts) {
    std::fill_n(out.begin() + static_cast<std::ptrdiff_t>(p), c, v);
    p += c;
    v = !v;
  }
  return out;
}

void rle_decode(const Rle& rle, uint8_t* out) {
  const uint64_t a = static_cast<uint64_t>(rle.h) * rle.w;
  if (rle_total(rle) != a) throw Error("rle_decode: counts do not sum to h*w");
  uint64_t p = 0;
  uint8_t v = 0;
  const uint64_t h = rle.h, w = rle.w;
  for (uint32_t c : rle.counts) {
    for (uint32_t k = 0; k < c; ++k, ++p) {
      uint64_t x = p / h, y = p % h;
      out[y * w + x] = v;
    }
    v = !v;
  }
}

std::vector<uint8_t> rle_decode(const Rle& rle) {
  std::vector<uint8_t> out(static_cast<size_t>(rle.h) * rle.w);
  rle_decode(rle, out.data());
  return out;
}

uint64_t rle_area(const Rle& rle) {
  uint64_t a = 0;
  for (size_t j = 1; j < rle.counts.size(); j += 2) a += rle.counts[j];
  return a;
}

BBox rle_to_bbox(const Rle& rle) {
  const uint32_t h = rle.h, w = rle.w;
  size_t m = (rle.counts.size() / 2) * 2;
  if (m == 0 || h == 0) return {0, 0, 0, 0};
  uint32_t xs = w, ys = h, xe = 0, ye = 0, cc = 0, xp = 0;
  bool any = false;
  for (size_t j = 0; j < m; ++j) {
    // An empty foreground run covers no pixel; maskApi would still read its
    // "last pixel" at cc-1 (a background pixel, or -1 wrapped to 4e9 at the
    // start). Canonical RLEs have none, so their boxes stay pycocotools'.
    if (rle.counts[j | 1] == 0) {
      cc += rle.counts[j];
      continue;
    }
    cc += rle.counts[j];
    any = true;
    uint32_t t = cc - static_cast<uint32_t>(j % 2);
    uint32_t y = t % h, x = (t - y) / h;
    if (j % 2 == 0) {
      xp = x;
    } else if (xp < x) {
      ys = 0;
      ye = h - 1;
    }
    xs = std::min(xs, x);
    xe = std::max(xe, x);
    ys = std::min(ys, y);
    ye = std::max(ye, y);
  }
  if (!any) return {0, 0, 0, 0};
  return {static_cast<double>(xs), static_cast<double>(ys), static_cast<double>(xe - xs + 1),
          static_cast<double>(ye - ys + 1)};
}

Rle rle_merge(const std::vector<Rle>& rles, bool intersect) {
  const size_t n = rles.size();
  if (n == 0) return Rle{};
  if (n == 1) return rles[0];
  uint32_t h = rles[0].h, w = rles[0].w;
  // Runs that do not cover their mask would make the walk below spin forever.
  for (const Rle& r : rles)
    if (rle_total(r) != uint64_t{r.h} * r.w) throw Error("rle_merge: RLE counts do not sum to h*w");
  std::vector<uint32_t> scratch;
  std::vector<uint32_t> cnts = canonical_runs(rles[0].counts, scratch);
  if (cnts.empty()) cnts.push_back(0);
  for (size_t i = 1; i < n; ++i) {
    const Rle& B = rles[i];
    if (B.h != h || B.w != w) {
      h = w = 0;
      cnts.clear();
      break;
    }
    const std::vector<uint32_t> A = cnts;
    size_t bm = 0;
    const uint32_t* bc = counts_or_zero(canonical_runs(B.counts, scratch), bm);
    cnts.clear();
    uint32_t ca = A[0], cb = bc[0], cc = 0, ct = 1;
    bool v = false, va = false, vb = false;
    size_t a = 1, b = 1;
    while (ct > 0) {
      uint32_t c = std::min(ca, cb);
      cc += c;
      ct = 0;
      ca -= c;
      if (!ca && a < A.size()) {
        ca = A[a++];
        va = !va;
      }
      ct += ca;
      cb -= c;
      if (!cb && b < bm) {
        cb = bc[b++];
        vb = !vb;
      }
      ct += cb;
      bool vp = v;
      v = intersect ? (va && vb) : (va || vb);
      if (v != vp || ct == 0) {
        cnts.push_back(cc);
        cc = 0;
      }
    }
  }
  Rle out;
  out.h = h;
  out.w = w;
  out.counts = std::move(cnts);
  return out;
}

Rle rle_from_polygon(const double* xy, size_t k, uint32_t h, uint32_t w) {
  // No pixels: maskApi's w-1 wraps and keeps every point, giving runs that
  // do not sum to 0 (and a merge of such masks never ends).
  if (h == 0 || w == 0) return Rle{h, w, {0}};
  const double scale = 5;
  // upsample and get discrete points densely along the entire boundary
  for (size_t j = 0; j < 2 * k; ++j)  // (int) of a NaN or huge value is undefined
    if (!(std::fabs(xy[j]) < 1e8)) throw Error("polygon coordinate is not finite or out of range");
  std::vector<int> x(k + 1), y(k + 1);
  for (size_t j = 0; j < k; ++j) x[j] = static_cast<int>(scale * xy[j * 2 + 0] + .5);
  for (size_t j = 0; j < k; ++j) y[j] = static_cast<int>(scale * xy[j * 2 + 1] + .5);
  if (k > 0) {
    x[k] = x[0];
    y[k] = y[0];
  }
  size_t m = 0;
  for (size_t j = 0; j < k; ++j)
    m += std::max(static_cast<uint32_t>(std::abs(x[j] - x[j + 1])),
                  static_cast<uint32_t>(std::abs(y[j] - y[j + 1]))) + 1u;
  // The edge walk visits every point of the outline at 5x; an outline far
  // longer than the image (a coordinate or box side in the millions) would
  // take seconds and gigabytes for points that are clipped anyway.
  const size_t max_points = std::max<size_t>(size_t{1} << 20, 256 * 5 * (size_t{h} + w) + k);
  if (m > max_points)
    throw Error("polygon outline is " + std::to_string(m / 5) + " px long, over 256 times the " +
                std::to_string(w) + "x" + std::to_string(h) +
                " image's perimeter (coordinates far outside the image?)");
  std::vector<int> u(m), v(m);
  m = 0;
  for (size_t j = 0; j < k; ++j) {
    int xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const int dx = std::abs(xe - xs), dy = std::abs(ys - ye);
    const bool flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      std::swap(xs, xe);
      std::swap(ys, ye);
    }
    if (dx == 0 && dy == 0) {
      // maskApi computes (int)(ys + NaN + .5) here: x86-64 turns NaN into INT_MIN.
      u[m] = xs;
      v[m] = std::numeric_limits<int>::min();
      ++m;
      continue;
    }
    const double s = dx >= dy ? static_cast<double>(ye - ys) / dx : static_cast<double>(xe - xs) / dy;
    if (dx >= dy) {
      for (int d = 0; d <= dx; ++d) {
        const int t = flip ? dx - d : d;
        u[m] = t + xs;
        v[m] = static_cast<int>(ys + s * t + .5);
        ++m;
      }
    } else {
      for (int d = 0; d <= dy; ++d) {
        const int t = flip ? dy - d : d;
        v[m] = t + ys;
        u[m] = static_cast<int>(xs + s * t + .5);
        ++m;
      }
    }
  }
  // get points along the y-boundary and downsample
  const size_t np = m;
  std::vector<int64_t> xb, yb;
  xb.reserve(np);
  yb.reserve(np);
  const double wmax = static_cast<double>(static_cast<uint64_t>(w) - 1);  // siz arithmetic: w-1 wraps
  for (size_t j = 1; j < np; ++j) {
    if (u[j] == u[j - 1]) continue;
    double xd = static_cast<double>(u[j] < u[j - 1] ? u[j] : u[j] - 1);
    xd = (xd + .5) / scale - .5;
    if (std::floor(xd) != xd || xd < 0 || xd > wmax) continue;
    double yd = static_cast<double>(v[j] < v[j - 1] ? v[j] : v[j - 1]);
    yd = (yd + .5) / scale - .5;
    if (yd < 0)
      yd = 0;
    else if (yd > h)
      yd = h;
    yd = std::ceil(yd);
    xb.push_back(static_cast<int>(xd));
    yb.push_back(static_cast<int>(yd));
  }
  // compute the RLE encoding given the y-boundary points
  std::vector<uint32_t> a(xb.size() + 1);
  for (size_t j = 0; j < xb.size(); ++j)
    a[j] = static_cast<uint32_t>(xb[j] * static_cast<int64_t>(static_cast<int>(h)) + yb[j]);
  a[xb.size()] = static_cast<uint32_t>(static_cast<uint64_t>(h) * w);
  std::sort(a.begin(), a.end());
  uint32_t p = 0;
  for (auto& t : a) {
    uint32_t cur = t;
    t -= p;
    p = cur;
  }
  Rle r;
  r.h = h;
  r.w = w;
  r.counts.reserve(a.size());
  size_t j = 0;
  r.counts.push_back(a[j++]);
  while (j < a.size()) {
    if (a[j] > 0) {
      r.counts.push_back(a[j++]);
    } else {
      ++j;
      if (j < a.size()) r.counts.back() += a[j++];
    }
  }
  return r;
}

Rle rle_from_polygon(const std::vector<double>& xy, uint32_t h, uint32_t w) {
  return rle_from_polygon(xy.data(), xy.size() / 2, h, w);
}

Rle rle_from_bbox(const BBox& bb, uint32_t h, uint32_t w) {
  const double xs = bb[0], xe = xs + bb[2];
  const double ys = bb[1], ye = ys + bb[3];
  const double xy[8] = {xs, ys, xs, ye, xe, ye, xe, ys};
  return rle_from_polygon(xy, 4, h, w);
}

Rle rle_from_polygons(const std::vector<std::vector<double>>& polys, uint32_t h, uint32_t w) {
  if (polys.empty()) throw Error("segmentation: empty polygon list");
  std::vector<Rle> rles;
  rles.reserve(polys.size());
  if (polys[0].size() == 4) {
    for (const auto& p : polys) {
      if (p.size() != 4) throw Error("segmentation: box list entry without 4 numbers");
      rles.push_back(rle_from_bbox({p[0], p[1], p[2], p[3]}, h, w));
    }
  } else {
    if (polys[0].size() < 4) throw Error("segmentation: polygon with fewer than 3 points");
    for (const auto& p : polys) rles.push_back(rle_from_polygon(p, h, w));
  }
  return rle_merge(rles, false);
}

std::string rle_to_string(const Rle& rle) {
  std::string s;
  s.reserve(rle.counts.size() * 2);
  for (size_t i = 0; i < rle.counts.size(); ++i) {
    int64_t x = static_cast<int64_t>(rle.counts[i]);
    if (i > 2) x -= static_cast<int64_t>(rle.counts[i - 2]);
    bool more = true;
    while (more) {
      char c = static_cast<char>(x & 0x1f);
      x >>= 5;  // arithmetic shift, as on every platform pycocotools runs
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      c += 48;
      s.push_back(c);
    }
  }
  return s;
}

Rle rle_from_string(std::string_view s, uint32_t h, uint32_t w) {
  Rle r;
  r.h = h;
  r.w = w;
  r.counts.reserve(s.size());
  size_t p = 0;
  while (p < s.size()) {
    int64_t x = 0;
    int k = 0;
    bool more = true;
    while (more) {
      if (p >= s.size()) throw Error("RLE string: truncated last count");
      const int c = static_cast<unsigned char>(s[p]) - 48;
      if (c < 0 || c > 63) throw Error("RLE string: invalid character");
      // 7 characters carry 35 bits, enough for any difference of 32-bit counts
      // (what rle_to_string and pycocotools write); more would overflow below.
      if (k >= 7) throw Error("RLE string: count too long");
      x |= static_cast<int64_t>(c & 0x1f) << (5 * k);
      more = (c & 0x20) != 0;
      ++p;
      ++k;
      if (!more && (c & 0x10)) x |= static_cast<int64_t>(-1) * (int64_t{1} << (5 * k));
    }
    const size_t m = r.counts.size();
    if (m > 2) x += static_cast<int64_t>(r.counts[m - 2]);
    r.counts.push_back(static_cast<uint32_t>(x));
  }
  return r;
}

void bbox_iou(const BBox* dt, size_t m, const BBox* gt, size_t n, const uint8_t* iscrowd,
              double* out) {
  for (size_t g = 0; g < n; ++g) {
    const BBox& G = gt[g];
    const double ga = G[2] * G[3];
    const bool crowd = iscrowd != nullptr && iscrowd[g];
    for (size_t d = 0; d < m; ++d) {
      const BBox& D = dt[d];
      const double da = D[2] * D[3];
      double& o = out[d * n + g];
      o = 0;
      const double w = std::fmin(D[2] + D[0], G[2] + G[0]) - std::fmax(D[0], G[0]);
      if (w <= 0) continue;
      const double hh = std::fmin(D[3] + D[1], G[3] + G[1]) - std::fmax(D[1], G[1]);
      if (hh <= 0) continue;
      const double i = w * hh;
      const double u = crowd ? da : da + ga - i;
      o = i / u;
    }
  }
}

std::vector<double> bbox_iou(const std::vector<BBox>& dt, const std::vector<BBox>& gt,
                             const std::vector<uint8_t>& iscrowd) {
  if (!iscrowd.empty() && iscrowd.size() != gt.size())
    throw Error("bbox_iou: iscrowd must have one flag per ground truth");
  std::vector<double> out(dt.size() * gt.size());
  bbox_iou(dt.data(), dt.size(), gt.data(), gt.size(), iscrowd.empty() ? nullptr : iscrowd.data(),
           out.data());
  return out;
}

void rle_iou(const Rle* dt, size_t m, const Rle* gt, size_t n, const uint8_t* iscrowd, double* out) {
  std::vector<BBox> db(m), gb(n);
  for (size_t d = 0; d < m; ++d) db[d] = rle_to_bbox(dt[d]);
  for (size_t g = 0; g < n; ++g) gb[g] = rle_to_bbox(gt[g]);
  bbox_iou(db.data(), m, gb.data(), n, iscrowd, out);
  // Canonical runs of each mask, copied only where a mask has empty runs.
  std::vector<std::vector<uint32_t>> scratch(m + n);
  std::vector<const std::vector<uint32_t>*> runs(m + n);
  for (size_t d = 0; d < m; ++d) runs[d] = &canonical_runs(dt[d].counts, scratch[d]);
  for (size_t g = 0; g < n; ++g) runs[m + g] = &canonical_runs(gt[g].counts, scratch[m + g]);
  for (size_t g = 0; g < n; ++g) {
    for (size_t d = 0; d < m; ++d) {
      double& o = out[d * n + g];
      if (!(o > 0)) continue;
      const bool crowd = iscrowd != nullptr && iscrowd[g];
      if (dt[d].h != gt[g].h || dt[d].w != gt[g].w) {
        o = -1;
        continue;
      }
      size_t ka = 0, kb = 0;
      const uint32_t* A = counts_or_zero(*runs[d], ka);
      const uint32_t* B = counts_or_zero(*runs[m + g], kb);
      uint32_t ca = A[0], cb = B[0], ct = 1, i = 0, u = 0;
      bool va = false, vb = false;
      size_t a = 1, b = 1;
      while (ct > 0) {
        const uint32_t c = std::min(ca, cb);
        if (va || vb) {
          u += c;
          if (va && vb) i += c;
        }
        ct = 0;
        ca -= c;
        if (!ca && a < ka) {
          ca = A[a++];
          va = !va;
        }
        ct += ca;
        cb -= c;
        if (!cb && b < kb) {
          cb = B[b++];
          vb = !vb;
        }
        ct += cb;
      }
      if (i == 0)
        u = 1;
      else if (crowd)
        u = static_cast<uint32_t>(rle_area(dt[d]));
      o = static_cast<double>(i) / static_cast<double>(u);
    }
  }
}

std::vector<double> rle_iou(const std::vector<Rle>& dt, const std::vector<Rle>& gt,
                            const std::vector<uint8_t>& iscrowd) {
  if (!iscrowd.empty() && iscrowd.size() != gt.size())
    throw Error("rle_iou: iscrowd must have one flag per ground truth");
  std::vector<double> out(dt.size() * gt.size());
  rle_iou(dt.data(), dt.size(), gt.data(), gt.size(), iscrowd.empty() ? nullptr : iscrowd.data(),
          out.data());
  return out;
}

}  // namespace maskrcnn
