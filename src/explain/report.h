// The sections of the explain report, one function each, in the order the
// data flows through the model. Each returns an HTML <section>.
#pragma once
#include <opencv2/core.hpp>

#include <string>
#include <vector>

#include "explain/figures.h"
#include "maskrcnn/explain.h"
#include "maskrcnn/trace.h"

namespace maskrcnn::explain {

struct ReportContext {
  const ForwardTrace& trace;
  cv::Mat photo;  // the original image, RGB
  const std::vector<std::string>& class_names;
  ExplainOptions options;
  double resized_to_photo = 1;  // 1 / the transform's scale
  int64_t followed = 0;         // detections followed through the heads
  std::string class_name(int64_t label) const;
};

// HTML pieces.
std::string section(const std::string& id, const std::string& title, const std::string& intro,
                    const std::string& body);
std::string figure(const std::string& uri, const std::string& caption, int display_width = 0,
                   bool pixelated = false);
std::string table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
std::string fmt_num(double v, int digits = 3);
std::string fmt_shape(const std::vector<int64_t>& shape);
std::string fmt_box(const at::Tensor& xyxy, double scale = 1);
// A small square of the colour, before a label.
std::string swatch(Rgb color);
// Counts as boxes joined by arrows: (count, what it counts), in order.
std::string flow(const std::vector<std::pair<int64_t, std::string>>& steps);

std::string transform_section(const ReportContext& c);
std::string backbone_section(const ReportContext& c);
std::string anchors_section(const ReportContext& c);
std::string rpn_section(const ReportContext& c);
std::string box_head_section(const ReportContext& c);
std::string roi_align_section(const ReportContext& c);
std::string mask_head_section(const ReportContext& c);
std::string result_section(const ReportContext& c);

}  // namespace maskrcnn::explain
