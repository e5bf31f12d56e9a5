// Sections 5-7 of the explain report: box head, RoIAlign, mask head, each
// following the first detections back to the proposal they came from.
#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>

#include "explain/figures.h"
#include "explain/report.h"

namespace maskrcnn::explain {
namespace {

std::string detection_title(const ReportContext& c, int64_t i) {
  const auto& d = c.trace.detections;
  return swatch(palette_color(i)) + "Detection " + std::to_string(i + 1) + ": " +
         html_escape(c.class_name(d.labels[i].item<int64_t>())) + " " + fmt_num(d.scores[i].item<double>(), 3);
}

// Classes by the box head's probability for proposal j, best first.
std::vector<int64_t> ranked_classes(const ReportContext& c, int64_t j) {
  auto order = std::get<1>(c.trace.box.class_probs[j].sort(0, /*descending=*/true));
  std::vector<int64_t> out(order.size(0));
  for (int64_t k = 0; k < order.size(0); ++k) out[k] = order[k].item<int64_t>();
  return out;
}

std::string empty_note(const ReportContext& c) {
  return c.followed == 0 ? "<p><b>No detection passed the score threshold on this photo, so there is none to "
                           "follow.</b></p>"
                         : "";
}

}  // namespace

std::string box_head_section(const ReportContext& c) {
  const auto& b = c.trace.box;
  const auto& props = c.trace.rpn.proposals;
  std::string body = flow({{props.size(0), "proposals"},
                           {b.candidates, "(proposal, class) pairs"},
                           {b.above_score, "score &gt; " + fmt_num(b.score_thresh, 2)},
                           {b.not_small, "not tiny"},
                           {b.after_nms, "after class-wise NMS (IoU " + fmt_num(b.nms_thresh, 2) + ")"},
                           {b.kept, "detections"}});
  body += "<p>Dropped: " + std::to_string(b.candidates - b.above_score) + " pairs scored at most " +
          fmt_num(b.score_thresh, 2) + "; " + std::to_string(b.above_score - b.not_small) +
          " boxes were under 0.01 pixels wide or high; " + std::to_string(b.not_small - b.after_nms) +
          " overlapped a better box of the same class; " + std::to_string(b.after_nms - b.kept) +
          " fell past the per-image limit.</p>";
  Canvas canvas = canvas_for(c.photo, c.resized_to_photo, c.options.max_side);
  std::vector<std::vector<std::string>> rows;
  for (int64_t i = c.followed - 1; i >= 0; --i) {
    const int64_t j = b.source_proposal[i].item<int64_t>();
    canvas.box(props[j], palette_color(i), 2, true);
    canvas.box(c.trace.mask.boxes[i], palette_color(i), 3, false);
  }
  for (int64_t i = 0; i < c.followed; ++i) {
    const int64_t j = b.source_proposal[i].item<int64_t>();
    std::string top;
    int shown = 0;
    for (int64_t k : ranked_classes(c, j)) {
      if (shown++ == 5) break;
      top += (top.empty() ? "" : "<br>") + html_escape(c.class_name(k)) + " " +
             fmt_num(b.class_probs[j][k].item<double>(), 3);
    }
    rows.push_back({detection_title(c, i),
                    "#" + std::to_string(j + 1) + " " + fmt_box(props[j], c.resized_to_photo) + ", objectness " +
                        fmt_num(c.trace.rpn.proposal_scores[j].item<double>(), 3),
                    fmt_box(c.trace.mask.boxes[i], c.resized_to_photo), top});
  }
  body += empty_note(c) + table({"detection", "from proposal (rank, box, objectness)", "refined box", "top 5 classes"}, rows) +
          "<div class=\"figs\">" +
          figure(jpeg_uri(canvas.image), "dashed: the proposal each detection came from; solid: the box the "
                                         "head regressed for its class (boxes in the photo's pixels above)") +
          "</div>";
  return section("box-head", "Box head",
                 "Each proposal's 7 x 7 pooled features go through two fully connected layers, which output a "
                 "probability for every class and one box refinement per class. Every (proposal, class) pair "
                 "is a candidate detection; the score threshold, class-wise non-maximum suppression and the "
                 "per-image limit decide which survive. Below, the first " + std::to_string(c.followed) +
                     " detections traced back to their proposals.",
                 body);
}

std::string roi_align_section(const ReportContext& c) {
  const auto& b = c.trace.box;
  std::string body = empty_note(c);
  for (int64_t i = 0; i < c.followed; ++i) {
    const int64_t j = b.source_proposal[i].item<int64_t>();
    const auto proposal = c.trace.rpn.proposals[j];
    const auto det_box = c.trace.mask.boxes[i];
    Canvas box_crop = crop_canvas(c.photo, proposal, c.resized_to_photo, 0.15, 220);
    box_crop.grid(proposal, 7, palette_color(i));
    Canvas mask_crop = crop_canvas(c.photo, det_box, c.resized_to_photo, 0.15, 220);
    mask_crop.grid(det_box, 14, palette_color(i));
    const auto box_feat = b.box_pooled[i], mask_feat = c.trace.mask.mask_pooled[i];
    body += "<div class=\"det\"><h3>" + detection_title(c, i) + "</h3><div class=\"figs\">" +
            figure(jpeg_uri(box_crop.image), "box branch: the proposal cut into 7 x 7 cells, 2 x 2 bilinear "
                                             "samples each (white dots)") +
            figure(png_uri(heat_map(mean_abs(box_feat))),
                   "pooled for the box head: " + fmt_shape({box_feat.size(0), 7, 7}) + ", mean |x| over channels",
                   160, true) +
            figure(jpeg_uri(mask_crop.image), "mask branch: the detection's box cut into 14 x 14 cells") +
            figure(png_uri(heat_map(mean_abs(mask_feat))),
                   "pooled for the mask head: " + fmt_shape({mask_feat.size(0), 14, 14}), 160, true) +
            "</div></div>";
  }
  return section("roi-align", "RoIAlign",
                 "RoIAlign turns a box of any size into a fixed grid of features: it picks the pyramid level "
                 "that suits the box's size, divides the box into cells, samples the level bilinearly at points "
                 "inside each cell (no rounding to the feature grid) and averages them. The box head reads 7 x 7 "
                 "cells of the proposal, the mask head 14 x 14 cells of the final box.",
                 body);
}

std::string mask_head_section(const ReportContext& c) {
  const auto& t = c.trace;
  std::string body = empty_note(c);
  for (int64_t i = 0; i < c.followed; ++i) {
    const int64_t label = t.detections.labels[i].item<int64_t>();
    const int64_t j = t.box.source_proposal[i].item<int64_t>();
    std::string figs = figure(png_uri(heat_map(t.mask.class_probs[i][label], 0, 1)),
                              "<b>" + html_escape(c.class_name(label)) + "</b> (the detection's class: the map "
                              "that is used)", 168, true);
    int others = 0;
    for (int64_t k : ranked_classes(c, j)) {
      if (k == 0 || k == label || others == 2) continue;
      ++others;
      figs += figure(png_uri(heat_map(t.mask.class_probs[i][k], 0, 1)),
                     html_escape(c.class_name(k)) + " (box score " + fmt_num(t.box.class_probs[j][k].item<double>(), 3) +
                         "): not used",
                     168, true);
    }
    // The pasted mask at image resolution, thresholded, over the photo.
    const auto& m = t.detections.masks.at(i);
    Canvas crop = crop_canvas(c.photo, t.mask.boxes[i], c.resized_to_photo, 0.15, 220);
    if (m.probs.numel() > 0) {
      auto bin = m.probs.ge(c.options.mask_threshold).to(at::kByte).contiguous();
      cv::Mat full = cv::Mat::zeros(c.photo.rows, c.photo.cols, CV_8UC1);
      cv::Mat(static_cast<int>(bin.size(0)), static_cast<int>(bin.size(1)), CV_8UC1, bin.data_ptr())
          .copyTo(full(cv::Rect(static_cast<int>(m.x0), static_cast<int>(m.y0), static_cast<int>(bin.size(1)),
                                static_cast<int>(bin.size(0)))));
      const double s = crop.scale / c.resized_to_photo;  // photo pixels -> crop pixels
      const int x0 = static_cast<int>(std::lround(crop.ox * c.resized_to_photo));
      const int y0 = static_cast<int>(std::lround(crop.oy * c.resized_to_photo));
      const int w = std::min(static_cast<int>(std::lround(crop.image.cols / s)), c.photo.cols - x0);
      const int h = std::min(static_cast<int>(std::lround(crop.image.rows / s)), c.photo.rows - y0);
      cv::Mat part;
      cv::resize(full(cv::Rect(x0, y0, std::max(w, 1), std::max(h, 1))), part, crop.image.size(), 0, 0,
                 cv::INTER_NEAREST);
      const auto rgb = palette_color(i);
      cv::Mat tint(crop.image.size(), crop.image.type(), cv::Scalar(rgb[0], rgb[1], rgb[2])), blended;
      cv::addWeighted(crop.image, 0.5, tint, 0.5, 0, blended);
      blended.copyTo(crop.image, part);
    }
    figs += figure(jpeg_uri(crop.image), "the chosen map resized to the box (one pixel of padding around the "
                                         "28 x 28), pasted into the photo and thresholded at " +
                                             fmt_num(c.options.mask_threshold, 2));
    body += "<div class=\"det\"><h3>" + detection_title(c, i) + "</h3><div class=\"figs\">" + figs + "</div></div>";
  }
  return section("mask-head", "Mask head",
                 "Four 3 x 3 convolutions and a 2x up-convolution turn the 14 x 14 pooled features into one 28 x "
                 "28 mask per class. The mask head does not choose the class: the box head's label picks which "
                 "map is kept, so the other classes' maps are never used. Shown as probabilities (sigmoid), "
                 "dark 0 to bright 1.",
                 body);
}

}  // namespace maskrcnn::explain
