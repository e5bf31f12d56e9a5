// Sections 1-4 of the explain report: transform, backbone + FPN, anchors, RPN.
#include <ATen/ATen.h>
#include <opencv2/imgproc.hpp>

#include <algorithm>

#include "explain/figures.h"
#include "explain/report.h"

namespace maskrcnn::explain {
namespace {

// Heat maps of one family of maps (C or P) at a common display width, so
// that coarser levels show bigger cells.
std::string feature_figures(const std::vector<TraceFeatureMap>& maps) {
  std::string out = "<div class=\"figs\">";
  for (const auto& m : maps) {
    const int64_t c = m.map.size(0), h = m.map.size(1), w = m.map.size(2);
    const auto a = mean_abs(m.map);
    out += figure(png_uri(heat_map(a)),
                  "<b>" + m.name + "</b> &middot; " + fmt_shape({c, h, w}) + " &middot; stride " +
                      std::to_string(m.stride) + " &middot; mean |x| " + fmt_num(a.mean().item<double>(), 3),
                  260, true);
  }
  return out + "</div>";
}

}  // namespace

std::string transform_section(const ReportContext& c) {
  const auto& t = c.trace;
  const int64_t hp = t.batch.size(1), wp = t.batch.size(2);
  // The batch as the backbone sees it, de-normalised for display; the padding
  // (zeros after normalisation) shows as the mean colour.
  auto mean = at::tensor(std::vector<float>(t.image_mean.begin(), t.image_mean.end())).view({3, 1, 1});
  auto std = at::tensor(std::vector<float>(t.image_std.begin(), t.image_std.end())).view({3, 1, 1});
  auto shown = ((t.batch * std + mean) * 255).clamp(0, 255).round().to(at::kByte);
  Canvas batch;
  batch.image = fit(to_mat(shown), c.options.max_side * 4 / 7);
  batch.scale = static_cast<double>(batch.image.cols) / wp;
  batch.box(0, 0, t.resized_width, t.resized_height, {230, 25, 75}, 2, true);
  auto norm_range = [&](int ch) {
    return "[" + fmt_num(-t.image_mean[ch] / t.image_std[ch], 2) + ", " +
           fmt_num((1 - t.image_mean[ch]) / t.image_std[ch], 2) + "]";
  };
  std::vector<std::vector<std::string>> rows = {
      {"original", fmt_shape({t.original_height, t.original_width}) + " (H x W)"},
      {"resized", fmt_shape({t.resized_height, t.resized_width}) + ", scale " + fmt_num(t.scale, 4)},
      {"normalised", "(x / 255 - mean) / std, mean " + fmt_num(t.image_mean[0], 3) + " " +
                         fmt_num(t.image_mean[1], 3) + " " + fmt_num(t.image_mean[2], 3) + ", std " +
                         fmt_num(t.image_std[0], 3) + " " + fmt_num(t.image_std[1], 3) + " " +
                         fmt_num(t.image_std[2], 3) + "; red now spans " + norm_range(0)},
      {"padded batch", "1 x " + fmt_shape({3, hp, wp}) + " (sides rounded up to a multiple of 32)"}};
  std::string body = table({"step", "value"}, rows) + "<div class=\"figs\">" +
                     figure(jpeg_uri(fit(c.photo, c.options.max_side * 4 / 7)),
                            "the photo, " + fmt_shape({t.original_height, t.original_width})) +
                     figure(jpeg_uri(batch.image), "the padded batch " + fmt_shape({hp, wp}) +
                                                       "; dashed: the resized photo, the rest is padding") +
                     "</div>";
  return section("transform", "Transform",
                 "The photo is scaled so that its short side reaches the model's minimum size (without its long "
                 "side passing the maximum), normalised with ImageNet's mean and standard deviation, and padded "
                 "into a batch whose sides divide by 32, so that every FPN level has whole cells.",
                 body);
}

std::string backbone_section(const ReportContext& c) {
  std::string body = "<h3>ResNet body: C2-C5</h3>" + feature_figures(c.trace.body) +
                     "<h3>Feature pyramid: P2-P6</h3>" + feature_figures(c.trace.fpn);
  const int64_t channels = c.trace.fpn.empty() ? 0 : c.trace.fpn[0].map.size(0);
  return section("backbone", "Backbone + FPN",
                 "The ResNet body halves the resolution at each stage while adding channels (C2 at stride 4 "
                 "to C5 at stride 32). The feature pyramid mixes each level with the coarser one above it and "
                 "gives every level the same " + std::to_string(channels) + " channels; P6 is P5 max-pooled. "
                 "Each heat map is the mean absolute activation over channels, one cell per map position: "
                 "bright where the level responds.",
                 body);
}

std::string anchors_section(const ReportContext& c) {
  const auto& t = c.trace;
  Canvas canvas = canvas_for(c.photo, c.resized_to_photo, c.options.max_side);
  std::vector<std::vector<std::string>> rows;
  int64_t total = 0;
  for (size_t l = 0; l < t.anchors.size(); ++l) {
    const auto& a = t.anchors[l];
    std::string sizes, ratios;
    for (double s : a.sizes) sizes += (sizes.empty() ? "" : ", ") + fmt_num(s, 0);
    for (double r : a.aspect_ratios) ratios += (ratios.empty() ? "" : ", ") + fmt_num(r, 1);
    const auto color = palette_color(l);
    rows.push_back({swatch(color) + a.feature,
                    std::to_string(a.stride), fmt_shape({a.height, a.width}), sizes, ratios,
                    std::to_string(a.cell_anchors.size(0)), std::to_string(a.count())});
    total += a.count();
    // One location per level, at the centre of the resized photo's grid.
    const double cx = std::floor(t.resized_width / 2.0 / a.stride) * a.stride;
    const double cy = std::floor(t.resized_height / 2.0 / a.stride) * a.stride;
    auto cell = a.cell_anchors.to(at::kDouble).contiguous();
    for (int64_t k = 0; k < cell.size(0); ++k) {
      const double* p = cell[k].data_ptr<double>();
      canvas.box(cx + p[0], cy + p[1], cx + p[2], cy + p[3], color, 2, false);
    }
  }
  rows.push_back({"<b>all</b>", "", "", "", "", "", "<b>" + std::to_string(total) + "</b>"});
  std::string body = table({"level", "stride", "grid", "size", "ratios (h/w)", "per cell", "anchors"}, rows) +
                     "<div class=\"figs\">" +
                     figure(jpeg_uri(canvas.image),
                            "the anchors of one cell per level, at the centre of the photo; every cell of "
                            "every level has its own copy") +
                     "</div>";
  return section("anchors", "Anchors",
                 "Anchors are the fixed reference boxes the RPN scores and refines: at every cell of every "
                 "pyramid level, one box per aspect ratio, sized for that level (small boxes on the fine P2, "
                 "large on the coarse P6).",
                 body);
}

std::string rpn_section(const ReportContext& c) {
  const auto& t = c.trace;
  const auto& r = t.rpn;
  std::string maps = "<div class=\"figs\">";
  int64_t anchors = 0, top_n = 0;
  for (size_t l = 0; l < r.objectness.size(); ++l) {
    const auto prob = r.objectness[l].sigmoid().amax(0);  // best anchor per cell
    anchors += t.anchors[l].count();
    if (l < r.pre_nms_top_n.size()) top_n += r.pre_nms_top_n[l];
    maps += figure(png_uri(heat_map(prob, 0, 1)),
                   "<b>" + t.anchors[l].feature + "</b> objectness, max " + fmt_num(prob.max().item<double>(), 3) +
                       "; keeps its top " + std::to_string(l < r.pre_nms_top_n.size() ? r.pre_nms_top_n[l] : 0),
                   260, true);
  }
  maps += "</div>";
  const std::string counts = flow({{anchors, "anchors scored"},
                                   {top_n, "top-n per level"},
                                   {r.pre_nms_boxes.size(0), "inside, not tiny, above score"},
                                   {r.after_nms, "after NMS (IoU 0.7, per level)"},
                                   {r.proposals.size(0), "proposals kept"}});
  // The best candidates by score, before and after NMS.
  const int64_t k = c.options.proposals_drawn;
  Canvas before = canvas_for(c.photo, c.resized_to_photo, c.options.max_side * 4 / 7);
  auto order = std::get<1>(r.pre_nms_scores.sort(0, /*descending=*/true));
  for (int64_t i = std::min<int64_t>(k, order.size(0)) - 1; i >= 0; --i) {
    const int64_t j = order[i].item<int64_t>();
    before.box(r.pre_nms_boxes[j], palette_color(r.pre_nms_levels[j].item<int64_t>()), 1, false);
  }
  Canvas after = canvas_for(c.photo, c.resized_to_photo, c.options.max_side * 4 / 7);
  for (int64_t i = std::min<int64_t>(k, r.proposals.size(0)) - 1; i >= 0; --i)
    after.box(r.proposals[i], palette_color(i), 2, false);
  std::string body = counts + "<h3>Objectness per level</h3>" + maps + "<h3>Proposals</h3><div class=\"figs\">" +
                     figure(jpeg_uri(before.image), "the " + std::to_string(std::min<int64_t>(k, order.size(0))) +
                                                        " best candidates before NMS (colour: pyramid level, "
                                                        "as in Anchors); many overlap") +
                     figure(jpeg_uri(after.image),
                            "the " + std::to_string(std::min<int64_t>(k, r.proposals.size(0))) +
                                " best proposals after NMS: overlapping candidates are gone") +
                     "</div>";
  return section("rpn", "Region proposal network",
                 "A small convolutional head scores every anchor for objectness and regresses a refinement of "
                 "it. The best-scoring anchors of each level are decoded into boxes, clipped to the image, and "
                 "non-maximum suppression removes candidates that overlap a better one; the survivors are the "
                 "proposals the box head examines.",
                 body);
}

}  // namespace maskrcnn::explain
