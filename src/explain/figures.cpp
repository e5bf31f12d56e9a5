#include "explain/figures.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "maskrcnn/error.h"

namespace maskrcnn::explain {
namespace {

std::string base64(const std::vector<uchar>& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    for (int s : {18, 12, 6, 0}) out.push_back(table[(v >> s) & 63]);
  }
  if (i < bytes.size()) {
    uint32_t v = bytes[i] << 16;
    if (i + 1 < bytes.size()) v |= bytes[i + 1] << 8;
    out.push_back(table[(v >> 18) & 63]);
    out.push_back(table[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? table[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::string encode(const cv::Mat& rgb, const char* ext, const char* mime, std::vector<int> params) {
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  if (!cv::imencode(ext, bgr, bytes, params)) throw Error(std::string("explain: could not encode a ") + ext);
  return std::string("data:") + mime + ";base64," + base64(bytes);
}

cv::Scalar scalar(Rgb c) { return cv::Scalar(c[0], c[1], c[2]); }

}  // namespace

Rgb palette_color(int64_t i) {
  static const Rgb palette[] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
                                {210, 245, 60}, {0, 128, 128}};
  return palette[static_cast<size_t>(i) % 10];
}

cv::Mat to_mat(const at::Tensor& rgb_u8) {
  auto hwc = rgb_u8.permute({1, 2, 0}).to(at::kByte).contiguous().cpu();
  cv::Mat out(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3);
  std::memcpy(out.data, hwc.data_ptr(), static_cast<size_t>(hwc.numel()));
  return out;
}

cv::Mat fit(const cv::Mat& rgb, int max_side) {
  // Small images (a 128-pixel data set) are enlarged up to 4x, so that the
  // boxes drawn on them stay legible.
  const double s = std::min(4.0, static_cast<double>(max_side) / std::max(rgb.cols, rgb.rows));
  if (s == 1) return rgb.clone();
  cv::Mat out;
  cv::resize(rgb, out, cv::Size(), s, s, s < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  return out;
}

std::string jpeg_uri(const cv::Mat& rgb, int quality) {
  return encode(rgb, ".jpg", "image/jpeg", {cv::IMWRITE_JPEG_QUALITY, quality});
}

std::string png_uri(const cv::Mat& rgb) { return encode(rgb, ".png", "image/png", {}); }

at::Tensor mean_abs(const at::Tensor& chw) { return chw.abs().mean(0); }

cv::Mat heat_map(const at::Tensor& map_in, double lo, double hi) {
  auto map = map_in.to(at::kFloat).contiguous().cpu();
  if (hi <= lo) {
    lo = map.numel() ? map.min().item<double>() : 0;
    hi = map.numel() ? map.max().item<double>() : 1;
    if (hi <= lo) hi = lo + 1;
  }
  auto u8 = ((map - lo) / (hi - lo) * 255).clamp(0, 255).to(at::kByte).contiguous();
  cv::Mat gray(static_cast<int>(u8.size(0)), static_cast<int>(u8.size(1)), CV_8UC1, u8.data_ptr());
  cv::Mat bgr, rgb;
  cv::applyColorMap(gray, bgr, cv::COLORMAP_VIRIDIS);
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  return rgb;
}

Canvas canvas_for(const cv::Mat& photo, double resized_to_photo, int max_side) {
  Canvas c;
  c.image = fit(photo, max_side);
  c.scale = resized_to_photo * static_cast<double>(c.image.cols) / photo.cols;
  return c;
}

Canvas crop_canvas(const cv::Mat& photo, const at::Tensor& box, double resized_to_photo, double margin,
                   int max_side) {
  auto b = box.to(at::kDouble).cpu().contiguous();
  const double* p = b.data_ptr<double>();
  const double mw = (p[2] - p[0]) * margin, mh = (p[3] - p[1]) * margin;
  const int x0 = std::clamp(static_cast<int>(std::floor((p[0] - mw) * resized_to_photo)), 0, photo.cols - 1);
  const int y0 = std::clamp(static_cast<int>(std::floor((p[1] - mh) * resized_to_photo)), 0, photo.rows - 1);
  const int x1 = std::clamp(static_cast<int>(std::ceil((p[2] + mw) * resized_to_photo)), x0 + 1, photo.cols);
  const int y1 = std::clamp(static_cast<int>(std::ceil((p[3] + mh) * resized_to_photo)), y0 + 1, photo.rows);
  Canvas c;
  const double s = static_cast<double>(max_side) / std::max(x1 - x0, y1 - y0);
  cv::resize(photo(cv::Rect(x0, y0, x1 - x0, y1 - y0)), c.image, cv::Size(), s, s,
             s < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
  c.scale = resized_to_photo * s;
  c.ox = x0 / resized_to_photo;
  c.oy = y0 / resized_to_photo;
  return c;
}

void Canvas::box(double x0, double y0, double x1, double y1, Rgb color, int thickness, bool dashed) {
  const cv::Point a(static_cast<int>(std::lround((x0 - ox) * scale)), static_cast<int>(std::lround((y0 - oy) * scale)));
  const cv::Point b(static_cast<int>(std::lround((x1 - ox) * scale)), static_cast<int>(std::lround((y1 - oy) * scale)));
  if (!dashed) {
    cv::rectangle(image, a, b, scalar(color), thickness, cv::LINE_AA);
    return;
  }
  const cv::Point corners[] = {a, {b.x, a.y}, b, {a.x, b.y}};
  for (int k = 0; k < 4; ++k) {
    const cv::Point p = corners[k], q = corners[(k + 1) % 4];
    const double len = std::hypot(q.x - p.x, q.y - p.y);
    for (double t = 0; t < len; t += 10) {
      const double u = std::min(t + 5, len);
      cv::line(image, p + (q - p) * (t / len), p + (q - p) * (u / len), scalar(color), thickness, cv::LINE_AA);
    }
  }
}

void Canvas::box(const at::Tensor& xyxy, Rgb color, int thickness, bool dashed) {
  auto b = xyxy.to(at::kDouble).cpu().contiguous();
  const double* p = b.data_ptr<double>();
  box(p[0], p[1], p[2], p[3], color, thickness, dashed);
}

void Canvas::grid(const at::Tensor& xyxy, int n, Rgb color) {
  auto b = xyxy.to(at::kDouble).cpu().contiguous();
  const double* p = b.data_ptr<double>();
  const double w = (p[2] - p[0]) / n, h = (p[3] - p[1]) / n;
  for (int i = 0; i <= n; ++i) {
    auto pt = [&](double x, double y) {
      return cv::Point(static_cast<int>(std::lround((x - ox) * scale)), static_cast<int>(std::lround((y - oy) * scale)));
    };
    cv::line(image, pt(p[0] + i * w, p[1]), pt(p[0] + i * w, p[3]), scalar(color), 1, cv::LINE_AA);
    cv::line(image, pt(p[0], p[1] + i * h), pt(p[2], p[1] + i * h), scalar(color), 1, cv::LINE_AA);
  }
  // torchvision's aligned=False RoIAlign with sampling_ratio 2: taps at 1/4
  // and 3/4 of each cell.
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      for (double u : {0.25, 0.75})
        for (double v : {0.25, 0.75})
          cv::circle(image,
                     cv::Point(static_cast<int>(std::lround((p[0] + (j + u) * w - ox) * scale)),
                               static_cast<int>(std::lround((p[1] + (i + v) * h - oy) * scale))),
                     1, cv::Scalar(255, 255, 255), cv::FILLED);
}

void Canvas::label(double x, double y, const std::string& text, Rgb color) {
  const cv::Point at(static_cast<int>(std::lround((x - ox) * scale)), static_cast<int>(std::lround((y - oy) * scale)));
  int base = 0;
  const auto size = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, 0.45, 1, &base);
  const cv::Point top(at.x, std::max(0, at.y - size.height - 4));
  cv::rectangle(image, top, top + cv::Point(size.width + 4, size.height + 4), scalar(color), cv::FILLED);
  cv::putText(image, text, top + cv::Point(2, size.height + 1), cv::FONT_HERSHEY_SIMPLEX, 0.45,
              cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace maskrcnn::explain
