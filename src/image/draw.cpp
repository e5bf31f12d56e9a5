// draw_detections: translucent masks, outlines, boxes and readable labels.
#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstdio>

#include "maskrcnn/image.h"

namespace maskrcnn {
namespace {

cv::Scalar color_for(int64_t label) {
  // A fixed palette of well-separated colours (RGB), cycled by label.
  static const int palette[][3] = {{230, 25, 75},  {60, 180, 75},   {255, 225, 25}, {0, 130, 200},
                                   {245, 130, 48}, {145, 30, 180},  {70, 240, 240}, {240, 50, 230},
                                   {210, 245, 60}, {250, 190, 212}, {0, 128, 128},  {220, 190, 255},
                                   {170, 110, 40}, {255, 250, 200}, {128, 0, 0},    {170, 255, 195},
                                   {128, 128, 0},  {255, 215, 180}, {0, 0, 128},    {128, 128, 128}};
  const auto& c = palette[static_cast<size_t>(label) % 20];
  return cv::Scalar(c[0], c[1], c[2]);
}

}  // namespace

at::Tensor draw_detections(const at::Tensor& rgb_u8, const Detections& dets,
                           const DrawOptions& opt) {
  auto hwc = rgb_u8.permute({1, 2, 0}).contiguous();
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  cv::Mat canvas(h, w, CV_8UC3);
  std::memcpy(canvas.data, hwc.data_ptr(), static_cast<size_t>(h) * w * 3);
  const double scale = std::max(0.4, std::min(h, w) / 900.0);
  const int thickness = std::max(1, static_cast<int>(std::lround(2 * scale)));

  auto boxes = dets.boxes.to(at::kFloat).cpu().contiguous();
  auto scores = dets.scores.to(at::kFloat).cpu().contiguous();
  auto labels = dets.labels.cpu().contiguous();
  const int64_t n = dets.size();
  const bool tracked = static_cast<int64_t>(opt.track_ids.size()) == n && n > 0;
  // A track's colour follows its id (a stride coprime to the palette's size keeps
  // neighbouring ids apart); otherwise the class's.
  auto color_of = [&](int64_t i) {
    return tracked ? color_for(opt.track_ids[i] * 7) : color_for(labels[i].item<int64_t>());
  };
  // Masks first (lowest score first, so the best detections end up on top).
  for (int64_t i = n - 1; i >= 0; --i) {
    const auto& m = dets.masks.at(i);
    if (m.probs.numel() == 0) continue;
    auto bin = m.probs.ge(opt.mask_threshold).to(at::kByte).cpu().contiguous();
    cv::Mat mask(static_cast<int>(bin.size(0)), static_cast<int>(bin.size(1)), CV_8UC1,
                 bin.data_ptr());
    cv::Rect roi(static_cast<int>(m.x0), static_cast<int>(m.y0), mask.cols, mask.rows);
    cv::Mat region = canvas(roi);
    const cv::Scalar c = color_of(i);
    cv::Mat tinted(region.size(), region.type(), c);
    cv::Mat blended;
    cv::addWeighted(region, 1.0 - opt.mask_alpha, tinted, opt.mask_alpha, 0.0, blended);
    blended.copyTo(region, mask);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(mask.clone(), contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_SIMPLE,
                     cv::Point(roi.x, roi.y));
    cv::drawContours(canvas, contours, -1, c, thickness, cv::LINE_AA);
  }
  // Boxes and labels on top.
  for (int64_t i = n - 1; i >= 0; --i) {
    const float* b = boxes[i].data_ptr<float>();
    const int64_t label = labels[i].item<int64_t>();
    const cv::Scalar c = color_of(i);
    cv::Point p1(static_cast<int>(b[0]), static_cast<int>(b[1]));
    cv::Point p2(static_cast<int>(b[2]), static_cast<int>(b[3]));
    cv::rectangle(canvas, p1, p2, c, thickness, cv::LINE_AA);
    std::string name = label >= 0 && static_cast<size_t>(label) < opt.class_names.size()
                           ? opt.class_names[label]
                           : std::to_string(label);
    char text[256];
    if (tracked)
      std::snprintf(text, sizeof text, "#%lld %s %.2f", static_cast<long long>(opt.track_ids[i]),
                    name.c_str(), scores[i].item<float>());
    else
      std::snprintf(text, sizeof text, "%s %.2f", name.c_str(), scores[i].item<float>());
    const double font = 0.5 * scale;
    int baseline = 0;
    cv::Size ts = cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, font, thickness, &baseline);
    // Label above the box, or inside it when the box touches the top edge.
    int x = std::clamp(p1.x, 0, std::max(0, w - ts.width - 4));
    int y = p1.y - ts.height - baseline - 4 >= 0 ? p1.y - ts.height - baseline - 4 : p1.y;
    y = std::clamp(y, 0, std::max(0, h - ts.height - baseline - 4));
    cv::rectangle(canvas, cv::Rect(x, y, ts.width + 4, ts.height + baseline + 4), c, cv::FILLED);
    // Black or white text, whichever contrasts with the label colour.
    const double luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    const cv::Scalar fg = luma > 140 ? cv::Scalar(0, 0, 0) : cv::Scalar(255, 255, 255);
    cv::putText(canvas, text, cv::Point(x + 2, y + ts.height + 2), cv::FONT_HERSHEY_SIMPLEX, font,
                fg, thickness, cv::LINE_AA);
  }
  auto out = at::empty({h, w, 3}, at::kByte);
  std::memcpy(out.data_ptr(), canvas.data, static_cast<size_t>(h) * w * 3);
  return out.permute({2, 0, 1}).contiguous();
}

}  // namespace maskrcnn
