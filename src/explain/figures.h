// The pictures of the explain report: heat maps of feature maps, boxes and
// sampling grids drawn over the photo, each encoded as a data: URI so that the
// report is one self-contained file. Images are RGB cv::Mat (CV_8UC3).
#pragma once
#include <ATen/core/Tensor.h>
#include <opencv2/core.hpp>

#include <array>
#include <string>

namespace maskrcnn::explain {

using Rgb = std::array<int, 3>;
Rgb palette_color(int64_t i);  // well-separated colours, cycled

// uint8 [3, H, W] -> RGB image.
cv::Mat to_mat(const at::Tensor& rgb_u8);
// Scaled so that its longer side is `max_side` (enlarged at most 4x).
cv::Mat fit(const cv::Mat& rgb, int max_side);

// Base64 data: URIs, for <img src>. JPEG for photographs (small), PNG for
// heat maps and masks (exact cells).
std::string jpeg_uri(const cv::Mat& rgb, int quality = 85);
std::string png_uri(const cv::Mat& rgb);

// A [H, W] float map as a colour heat map (viridis-like), scaled from its
// own min to max (or [lo, hi] where hi > lo). Cells stay cells: no smoothing.
cv::Mat heat_map(const at::Tensor& map, double lo = 0, double hi = 0);
// mean |x| over the channels of a [C, H, W] map: where a level responds.
at::Tensor mean_abs(const at::Tensor& chw);

// Drawing in the model's resized-image pixels onto a picture of the photo:
// `scale` maps those pixels to the picture's.
struct Canvas {
  cv::Mat image;
  double scale = 1;
  double ox = 0, oy = 0;  // the resized-image point at the picture's top left
  void box(const at::Tensor& xyxy, Rgb color, int thickness = 2, bool dashed = false);
  void box(double x0, double y0, double x1, double y1, Rgb color, int thickness, bool dashed);
  // The n x n cells RoIAlign divides a box into, with its sampling points
  // (sampling_ratio 2: 2 x 2 bilinear taps per cell).
  void grid(const at::Tensor& xyxy, int n, Rgb color);
  void label(double x, double y, const std::string& text, Rgb color);
};
// The photo at `max_side`, with scale set for boxes in resized pixels.
Canvas canvas_for(const cv::Mat& photo, double resized_to_photo, int max_side);
// The part of the photo around a box (resized pixels), grown by `margin` of
// its size on each side, its longer side shown `max_side` pixels long.
Canvas crop_canvas(const cv::Mat& photo, const at::Tensor& box, double resized_to_photo, double margin,
                   int max_side);

std::string html_escape(const std::string& s);

}  // namespace maskrcnn::explain
