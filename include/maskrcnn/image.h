// Image I/O and drawing (OpenCV underneath, not exposed).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "maskrcnn/types.h"

namespace maskrcnn {

struct ImageReadOptions {
  // Refuse images with more pixels than this before decoding them.
  int64_t max_pixels = int64_t{1} << 28;
};

// Reads a JPEG, PNG or BMP (other formats are refused: OpenCV decoders for
// rarer formats have crashed on hostile files) as RGB uint8 [3, H, W],
// like torchvision.io.read_image(path, ImageReadMode.RGB): grayscale is
// replicated, alpha dropped, 16-bit scaled to 8-bit. Throws maskrcnn::Error for
// missing, unreadable, truncated, empty or oversized images.
at::Tensor read_image(const std::string& path, const ImageReadOptions& options = {});
// The same from encoded bytes in memory; `name` prefixes error messages.
at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& name,
                        const ImageReadOptions& options = {});

// uint8 [3, H, W] -> float [3, H, W] in [0, 1], the model's input.
at::Tensor to_float_image(const at::Tensor& rgb_u8);

// Writes uint8 [3, H, W] RGB as PNG, atomically (temporary file + rename).
void write_png(const std::string& path, const at::Tensor& rgb_u8);

struct DrawOptions {
  double mask_threshold = 0.5;
  double mask_alpha = 0.45;
  std::vector<std::string> class_names;  // label -> name; empty: the number
  // Videos: one track id per detection (Tracker::update). Each track keeps a
  // colour of its own and its label reads "#id name score".
  std::vector<int64_t> track_ids;
};

// Draws translucent masks, their outlines, boxes and "name score" labels.
at::Tensor draw_detections(const at::Tensor& rgb_u8, const Detections& dets,
                           const DrawOptions& options = {});

}  // namespace maskrcnn
