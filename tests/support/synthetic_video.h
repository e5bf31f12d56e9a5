// Synthetic videos for tests: shapes moving in straight lines over a grey
// background, written with the library's VideoWriter.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "maskrcnn/video.h"

namespace maskrcnn::testing {

// Frame k of an h x w scene: a red square moving right, a green disc moving
// left, a blue bar moving down (each a few pixels a frame).
inline at::Tensor synthetic_frame(int64_t k, int64_t h, int64_t w) {
  auto rgb = at::full({3, h, w}, 96, at::kByte);
  auto ys = at::arange(h).view({h, 1}), xs = at::arange(w).view({1, w});
  auto paint = [&](const at::Tensor& inside, int r, int g, int b) {
    rgb[0].masked_fill_(inside, r);
    rgb[1].masked_fill_(inside, g);
    rgb[2].masked_fill_(inside, b);
  };
  const int64_t s = std::max<int64_t>(8, h / 5);
  const int64_t sx = (4 + 3 * k) % (w - s), sy = h / 6;
  paint(xs.ge(sx) & xs.lt(sx + s) & ys.ge(sy) & ys.lt(sy + s), 220, 40, 40);
  const int64_t cx = w - 1 - s / 2 - (3 * k) % (w - s), cy = h / 2;
  paint((xs - cx).pow(2) + (ys - cy).pow(2) < (s / 2) * (s / 2), 40, 200, 60);
  const int64_t by = (2 * k) % (h - s / 2);
  paint(xs.ge(w / 2) & xs.lt(w / 2 + s / 2) & ys.ge(by) & ys.lt(by + s / 2), 40, 60, 220);
  return rgb;
}

inline void write_synthetic_video(const std::string& path, int64_t frames, int64_t h, int64_t w,
                                  double fps = 10) {
  VideoWriter out(path, w, h, fps);
  for (int64_t k = 0; k < frames; ++k) out.write(synthetic_frame(k, h, w));
  out.close();
}

}  // namespace maskrcnn::testing
