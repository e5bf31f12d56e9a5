// The explain report's page: its style, the HTML helpers the sections share,
// and the final section (the result and the stage times).
#include "explain/report.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "explain/figures.h"
#include "maskrcnn/image.h"

namespace maskrcnn {
namespace explain {
namespace {

const char* kStyle = R"css(
:root { --ink:#1d2330; --muted:#5b6476; --line:#dde2ea; --accent:#2f6fde; --paper:#f6f7fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--paper); }
header { background:#1d2330; color:#fff; padding:28px 40px; }
header h1 { margin:0 0 6px; font-size:26px; font-weight:650; }
header p { margin:0; color:#c4cbd8; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:8px 40px; display:flex; gap:18px; flex-wrap:wrap; }
nav a { color:var(--muted); text-decoration:none; font-size:14px; }
nav a:hover { color:var(--accent); }
main { max-width:1200px; margin:0 auto; padding:12px 40px 60px; }
section.stage { background:#fff; border:1px solid var(--line); border-radius:10px; padding:22px 26px; margin:22px 0; }
section.stage h2 { margin:0 0 6px; font-size:20px; }
section.stage h2 .n { color:var(--accent); margin-right:8px; }
p.intro { margin:0 0 14px; color:var(--muted); max-width:900px; }
.figs { display:flex; flex-wrap:wrap; gap:14px; align-items:flex-start; }
figure { margin:0; display:table; }
figure img { display:block; border:1px solid var(--line); border-radius:4px; max-width:100%; background:#000; }
figure img.px { image-rendering:pixelated; }
figcaption { display:table-caption; caption-side:bottom; font-size:12.5px; color:var(--muted); padding-top:4px; min-width:160px; }
table { border-collapse:collapse; margin:10px 0; font-size:13.5px; }
th, td { border-bottom:1px solid var(--line); padding:5px 12px 5px 0; text-align:left; vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.flow { display:flex; gap:8px; align-items:center; flex-wrap:wrap; margin:8px 0 14px; }
.flow .step { background:var(--paper); border:1px solid var(--line); border-radius:6px; padding:6px 10px; font-size:13px; }
.flow .step b { display:block; font-size:16px; }
.flow .arrow { color:var(--muted); }
.det { border-top:1px solid var(--line); padding-top:12px; margin-top:12px; }
.det h3 { margin:0 0 8px; font-size:16px; }
.swatch { display:inline-block; width:11px; height:11px; border-radius:2px; margin-right:6px; vertical-align:baseline; }
footer { color:var(--muted); font-size:12.5px; text-align:center; padding:20px; }
)css";

std::string nav_links() {
  const char* items[][2] = {{"transform", "Transform"},   {"backbone", "Backbone + FPN"},
                            {"anchors", "Anchors"},       {"rpn", "RPN"},
                            {"box-head", "Box head"},     {"roi-align", "RoIAlign"},
                            {"mask-head", "Mask head"},   {"result", "Result"}};
  std::string out = "<nav>";
  for (auto& i : items) out += std::string("<a href=\"#") + i[0] + "\">" + i[1] + "</a>";
  return out + "</nav>";
}

}  // namespace

std::string ReportContext::class_name(int64_t label) const {
  if (label >= 0 && label < static_cast<int64_t>(class_names.size())) return class_names[label];
  return std::to_string(label);
}

std::string section(const std::string& id, const std::string& title, const std::string& intro,
                    const std::string& body) {
  static const char* order[] = {"transform", "backbone", "anchors", "rpn", "box-head", "roi-align", "mask-head", "result"};
  int n = 0;
  for (int i = 0; i < 8; ++i)
    if (id == order[i]) n = i + 1;
  return "<section class=\"stage\" id=\"" + id + "\"><h2><span class=\"n\">" + std::to_string(n) +
         "</span>" + html_escape(title) + "</h2><p class=\"intro\">" + intro + "</p>" + body + "</section>\n";
}

std::string figure(const std::string& uri, const std::string& caption, int display_width, bool pixelated) {
  std::string style = display_width > 0 ? " style=\"width:" + std::to_string(display_width) + "px\"" : "";
  return "<figure><img" + std::string(pixelated ? " class=\"px\"" : "") + style + " src=\"" + uri +
         "\" alt=\"" + html_escape(caption) + "\"><figcaption>" + caption + "</figcaption></figure>";
}

std::string table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  auto numeric = [](const std::string& s) {
    return !s.empty() && (std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-') &&
           s.find_first_not_of("0123456789.,-x% ") == std::string::npos;
  };
  std::string out = "<table><tr>";
  for (auto& h : header) out += "<th>" + h + "</th>";
  out += "</tr>";
  for (auto& r : rows) {
    out += "<tr>";
    for (auto& cell : r) out += (numeric(cell) ? "<td class=\"num\">" : "<td>") + cell + "</td>";
    out += "</tr>";
  }
  return out + "</table>";
}

std::string fmt_num(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string fmt_shape(const std::vector<int64_t>& shape) {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? " x " : "") + std::to_string(shape[i]);
  return out;
}

std::string fmt_box(const at::Tensor& xyxy, double scale) {
  auto b = xyxy.to(at::kDouble).cpu().contiguous();
  const double* p = b.data_ptr<double>();
  return "(" + fmt_num(p[0] * scale, 0) + ", " + fmt_num(p[1] * scale, 0) + ") - (" + fmt_num(p[2] * scale, 0) +
         ", " + fmt_num(p[3] * scale, 0) + ")";
}

std::string swatch(Rgb c) {
  return "<span class=\"swatch\" style=\"background:rgb(" + std::to_string(c[0]) + "," + std::to_string(c[1]) +
         "," + std::to_string(c[2]) + ")\"></span>";
}

std::string flow(const std::vector<std::pair<int64_t, std::string>>& steps) {
  std::string out = "<div class=\"flow\">";
  for (size_t i = 0; i < steps.size(); ++i)
    out += (i ? "<span class=\"arrow\">&rarr;</span>" : "") + std::string("<div class=\"step\"><b>") +
           std::to_string(steps[i].first) + "</b>" + steps[i].second + "</div>";
  return out + "</div>";
}

std::string result_section(const ReportContext& c) {
  DrawOptions draw;
  draw.class_names = c.class_names;
  draw.mask_threshold = c.options.mask_threshold;
  const auto& t = c.trace;
  // A small photo is drawn on enlarged k times (nearest), for legible labels.
  const int64_t k = std::max<int64_t>(1, std::min<int64_t>(4, c.options.max_side / std::max(c.photo.cols, c.photo.rows)));
  at::Tensor photo = at::from_blob(c.photo.data, {c.photo.rows, c.photo.cols, 3}, at::kByte).permute({2, 0, 1});
  Detections dets = t.detections;
  if (k > 1) {
    photo = photo.repeat_interleave(k, 1).repeat_interleave(k, 2);
    dets.boxes = dets.boxes * static_cast<double>(k);
    dets.image_height *= k;
    dets.image_width *= k;
    for (auto& m : dets.masks) {
      m.x0 *= k;
      m.y0 *= k;
      m.probs = m.probs.repeat_interleave(k, 0).repeat_interleave(k, 1);
    }
  }
  cv::Mat drawn = to_mat(draw_detections(photo, dets, draw));
  std::string body = "<div class=\"figs\">" +
                     figure(jpeg_uri(fit(drawn, c.options.max_side)),
                            std::to_string(t.detections.size()) + " detections above score " +
                                fmt_num(t.box.score_thresh, 2) + ", masks at probability " +
                                fmt_num(c.options.mask_threshold, 2)) +
                     "</div>";
  std::vector<std::vector<std::string>> rows;
  double total = 0;
  for (auto& s : t.stage_times) total += s.seconds;
  for (auto& s : t.stage_times)
    rows.push_back({s.name, fmt_num(s.seconds * 1000, 1), fmt_num(total > 0 ? 100 * s.seconds / total : 0, 1),
                    fmt_num(s.gflop, 2)});
  rows.push_back({"<b>total</b>", "<b>" + fmt_num(total * 1000, 1) + "</b>", "100.0", ""});
  body += "<h3>Time per stage</h3>" + table({"stage", "ms", "%", "GFLOP"}, rows) +
          "<p class=\"intro\">Measured on this forward pass by the profiler that <code>maskrcnn bench</code> "
          "uses. Tracing adds the copies of every intermediate and the masks of all classes, so this pass is "
          "somewhat slower than <code>predict</code>.</p>";
  return section("result", "Result",
                 "The pasted masks, their boxes and labels: what <code>maskrcnn predict</code> returns for "
                 "this photo.",
                 body);
}

}  // namespace explain

std::string render_explain_report(const ForwardTrace& trace, const at::Tensor& rgb_u8,
                                  const std::vector<std::string>& class_names,
                                  const ExplainOptions& options) {
  using namespace explain;
  ReportContext c{trace, to_mat(rgb_u8), class_names, options};
  c.resized_to_photo = trace.original_width > 0 && trace.resized_width > 0
                           ? static_cast<double>(trace.original_width) / trace.resized_width
                           : 1.0;
  c.followed = std::min<int64_t>(std::max(options.detections, 0), trace.detections.size());
  std::ostringstream html;
  html << "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
       << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       << "<title>Mask R-CNN explained" << (options.title.empty() ? "" : ": " + html_escape(options.title))
       << "</title><style>" << kStyle << "</style></head><body><header><h1>Mask R-CNN, stage by stage</h1><p>"
       << (options.title.empty() ? "" : html_escape(options.title) + " &middot; ") << trace.original_width
       << " x " << trace.original_height << " pixels &middot; " << trace.detections.size()
       << " detections &middot; every number below comes from this one forward pass</p></header>"
       << nav_links() << "<main>";
  html << transform_section(c) << backbone_section(c) << anchors_section(c) << rpn_section(c)
       << box_head_section(c) << roi_align_section(c) << mask_head_section(c) << result_section(c);
  html << "</main><footer>maskrcnn explain</footer></body></html>\n";
  return html.str();
}

std::string explain_html(const MaskRCNN& model, const at::Tensor& rgb_u8, const ExplainOptions& options) {
  ForwardTrace trace;
  model.predict_traced(rgb_u8, trace);
  return render_explain_report(trace, rgb_u8, model.class_names(), options);
}

}  // namespace maskrcnn
