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
    auto model = maskrcnn::MaskRCNN::from_checkpoint(argv[1]);
    at::Tensor rgb = maskrcnn::read_image(argv[2]);
    maskrcnn::Detections dets = model.predict({maskrcnn::to_float_image(rgb)}).at(0);
    const auto& names = maskrcnn::coco_category_names();
    for (int64_t i = 0; i < dets.size(); ++i) {
      const int64_t label = dets.labels[i].item<int64_t>();
      const bool coco = model.config().num_classes == 91;
      std::printf("%-14s %.3f  box %.0f,%.0f,%.0f,%.0f  mask %ld px\n",
                  coco ? names[label].c_str() : std::to_string(label).c_str(),
                  dets.scores[i].item<float>(), dets.boxes[i][0].item<float>(),
                  dets.boxes[i][1].item<float>(), dets.boxes[i][2].item<float>(),
                  dets.boxes[i][3].item<float>(),
                  static_cast<long>(dets.binary_mask(i).sum().item<int64_t>()));
    }
    if (argc > 3) {
      maskrcnn::DrawOptions draw;
      if (model.config().num_classes == 91) draw.class_names = names;
      maskrcnn::write_png(argv[3], maskrcnn::draw_detections(rgb, dets, draw));
    }
  } catch (const maskrcnn::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
