// A benchmark video: a W x H window panning across a photo (scaled to cover
// 1.5 W x H), FRAMES frames at FPS, written with the library's VideoWriter;
// the first PNGS frames also as PNG files (for torchvision's side).
//   make_pan_video PHOTO OUT.mp4 W H FRAMES FPS [PNG_DIR PNGS]
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "maskrcnn/image.h"
#include "maskrcnn/video.h"

int main(int argc, char** argv) {
  if (argc != 7 && argc != 9) {
    std::fprintf(stderr, "usage: make_pan_video PHOTO OUT W H FRAMES FPS [PNG_DIR PNGS]\n");
    return 2;
  }
  const int64_t w = std::stoll(argv[3]), h = std::stoll(argv[4]), frames = std::stoll(argv[5]);
  const double fps = std::stod(argv[6]);
  const int64_t pngs = argc == 9 ? std::stoll(argv[8]) : 0;
  auto photo = maskrcnn::read_image(argv[1]).unsqueeze(0).to(at::kFloat);
  const int64_t wide = w * 3 / 2;
  auto scene = at::upsample_bilinear2d(photo, {h, wide}, false).round().clamp(0, 255).to(at::kByte)[0];
  maskrcnn::VideoWriter out(argv[2], w, h, fps);
  for (int64_t k = 0; k < frames; ++k) {
    const int64_t x0 = (wide - w) * k / std::max<int64_t>(1, frames - 1);
    auto frame = scene.slice(2, x0, x0 + w).contiguous();
    out.write(frame);
    if (k < pngs) maskrcnn::write_png(std::string(argv[7]) + "/frame" + std::to_string(k) + ".png", frame);
  }
  out.close();
  return 0;
}
