// A short program using the library: segment one image, print the detections
// and save an annotated PNG.
//
//   example_segment_image WEIGHTS.pth IMAGE [OUT.png]
#include <maskrcnn/maskrcnn.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s WEIGHTS.pth IMAGE [OUT.png]\n", argv[0]);
    return 2;
  }
  try {
    auto model = maskrcnn::load_model(argv[1]);        // + its sidecar .json, if any
    at::Tensor rgb = maskrcnn::read_image(argv[2]);    // uint8 [3, H, W]
    maskrcnn::Detections dets = model.predict({rgb}).at(0);
    const auto& names = model.class_names();
    for (int64_t i = 0; i < dets.size(); ++i) {
      const int64_t label = dets.labels[i].item<int64_t>();
      std::printf("%-14s %.3f  box %.0f,%.0f,%.0f,%.0f  mask %ld px\n", names.at(label).c_str(),
                  dets.scores[i].item<float>(), dets.boxes[i][0].item<float>(),
                  dets.boxes[i][1].item<float>(), dets.boxes[i][2].item<float>(),
                  dets.boxes[i][3].item<float>(),
                  static_cast<long>(dets.binary_mask(i).sum().item<int64_t>()));
    }
    if (argc > 3) {
      maskrcnn::DrawOptions draw;
      draw.class_names = names;
      maskrcnn::write_png(argv[3], maskrcnn::draw_detections(rgb, dets, draw));
    }
  } catch (const maskrcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
