// A short program using the trace API: one forward pass that also records
// what every stage computed, printed stage by stage, and the explain report.
//
//   example_trace_stages WEIGHTS.pth IMAGE [REPORT.html]
#include <maskrcnn/maskrcnn.h>

#include <cstdio>
#include <fstream>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s WEIGHTS.pth IMAGE [REPORT.html]\n", argv[0]);
    return 2;
  }
  try {
    auto model = maskrcnn::load_model(argv[1]);
    at::Tensor rgb = maskrcnn::read_image(argv[2]);
    maskrcnn::ForwardTrace trace;
    maskrcnn::Detections dets = model.predict_traced(rgb, trace);
    std::printf("transform  %ldx%ld -> %ldx%ld (scale %.3f), batch %ldx%ld\n", (long)trace.original_height,
                (long)trace.original_width, (long)trace.resized_height, (long)trace.resized_width, trace.scale,
                (long)trace.batch.size(1), (long)trace.batch.size(2));
    for (const auto& m : trace.fpn)
      std::printf("%-10s %ld x %ld x %ld, stride %ld\n", m.name.c_str(), (long)m.map.size(0), (long)m.map.size(1),
                  (long)m.map.size(2), (long)m.stride);
    int64_t anchors = 0;
    for (const auto& a : trace.anchors) anchors += a.count();
    std::printf("rpn        %ld anchors -> %ld candidates -> %ld after NMS -> %ld proposals\n", (long)anchors,
                (long)trace.rpn.pre_nms_boxes.size(0), (long)trace.rpn.after_nms,
                (long)trace.rpn.proposals.size(0));
    const auto& b = trace.box;
    std::printf("box head   %ld pairs -> %ld above %.2f -> %ld after NMS -> %ld detections\n", (long)b.candidates,
                (long)b.above_score, b.score_thresh, (long)b.after_nms, (long)b.kept);
    for (int64_t i = 0; i < dets.size() && i < 3; ++i) {
      const int64_t label = dets.labels[i].item<int64_t>();
      const int64_t source = b.source_proposal[i].item<int64_t>();
      std::printf("  %-12s %.3f from proposal #%ld (objectness %.3f)\n", model.class_names().at(label).c_str(),
                  dets.scores[i].item<float>(), (long)source + 1, trace.rpn.proposal_scores[source].item<float>());
    }
    for (const auto& s : trace.stage_times) std::printf("  %-28s %8.1f ms\n", s.name.c_str(), s.seconds * 1e3);
    if (argc > 3) {
      std::ofstream(argv[3], std::ios::binary) << maskrcnn::render_explain_report(trace, rgb, model.class_names());
      std::printf("wrote %s\n", argv[3]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
