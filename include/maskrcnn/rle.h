// COCO run-length encoded masks, bit-compatible with pycocotools (common/maskApi.c).
//
// An Rle holds an h x w binary mask as run lengths over the mask in column-major
// (Fortran) order, starting with a run of zeros (which may be 0 long). The
// compressed string form (rle_to_string / rle_from_string) is pycocotools'
// LEB128-like encoding: 5 bits per character, ASCII 48..111, counts after the
// second stored as differences to the count two places back.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace maskrcnn {

struct Rle {
  uint32_t h = 0;
  uint32_t w = 0;
  std::vector<uint32_t> counts;  // run lengths, zeros first, sum == h * w

  bool operator==(const Rle& o) const { return h == o.h && w == o.w && counts == o.counts; }
  bool operator!=(const Rle& o) const { return !(*this == o); }
};

// COCO box: x, y, width, height.
using BBox = std::array<double, 4>;

// Encode a binary mask; any nonzero byte is foreground.
// rle_encode reads a row-major (C order) h x w buffer, the natural C++ layout.
Rle rle_encode(const uint8_t* mask_row_major, int h, int w);
// rle_encode_column_major reads a column-major (Fortran order) buffer, as pycocotools does.
Rle rle_encode_column_major(const uint8_t* mask_col_major, int h, int w);

// The same as rle_encode of an h x w image that is zero except for a window:
// `window` (row-major, wh x ww) placed at (y0, x0), which must lie inside the
// image. Costs O(w + wh * ww), not O(h * w): a detection's mask pasted in a
// large photo encodes without the photo-sized buffer.
Rle rle_encode_window(const uint8_t* window_row_major, int wh, int ww, int y0, int x0, int h, int w);

// Decode into 0/1 bytes. Throws maskrcnn::Error if the counts do not sum to h*w.
std::vector<uint8_t> rle_decode(const Rle& rle);  // row-major h x w
void rle_decode(const Rle& rle, uint8_t* out_row_major);
std::vector<uint8_t> rle_decode_column_major(const Rle& rle);

// Number of foreground pixels (maskApi rleArea).
uint64_t rle_area(const Rle& rle);
// Tight bounding box [x, y, w, h] (maskApi rleToBbox); all zeros for an empty mask.
BBox rle_to_bbox(const Rle& rle);
// Union (intersect = false) or intersection of masks of one size (maskApi rleMerge).
// Masks of different sizes give an empty 0x0 Rle, as pycocotools does.
Rle rle_merge(const std::vector<Rle>& rles, bool intersect = false);

// Rasterise one polygon x0,y0,x1,y1,... exactly as maskApi rleFrPoly does
// (upsampled by 5, edge walk, rounding). num_points = number of (x, y) pairs.
Rle rle_from_polygon(const double* xy, size_t num_points, uint32_t h, uint32_t w);
Rle rle_from_polygon(const std::vector<double>& xy, uint32_t h, uint32_t w);
// A COCO polygon list as pycocotools' annToRLE treats it: frPyObjects + merge.
// Quirk kept: if the first polygon has exactly 4 numbers, every entry is read as
// a box [x, y, w, h] (frBbox), as pycocotools does.
Rle rle_from_polygons(const std::vector<std::vector<double>>& polygons, uint32_t h, uint32_t w);
// A box as a mask (maskApi rleFrBbox: the box's corners as a polygon).
Rle rle_from_bbox(const BBox& box, uint32_t h, uint32_t w);

// Compressed string (maskApi rleToString / rleFrString). rle_from_string throws
// maskrcnn::Error on a character outside '0'..'o' or a truncated last count.
std::string rle_to_string(const Rle& rle);
Rle rle_from_string(std::string_view s, uint32_t h, uint32_t w);

// Sum of the counts (== h*w for a valid mask).
uint64_t rle_total(const Rle& rle);

// IoU of every detection with every ground truth (pycocotools mask.iou):
// out[d * num_gt + g]. A crowd ground truth (iscrowd[g] != 0) uses the
// detection's area as the union. Masks of different sizes whose boxes overlap
// give -1, as maskApi does. iscrowd may be null (no crowds).
void rle_iou(const Rle* dt, size_t num_dt, const Rle* gt, size_t num_gt, const uint8_t* iscrowd,
             double* out);
std::vector<double> rle_iou(const std::vector<Rle>& dt, const std::vector<Rle>& gt,
                            const std::vector<uint8_t>& iscrowd);
// Box IoU with the same crowd rule (maskApi bbIou); out[d * num_gt + g].
void bbox_iou(const BBox* dt, size_t num_dt, const BBox* gt, size_t num_gt, const uint8_t* iscrowd,
              double* out);
std::vector<double> bbox_iou(const std::vector<BBox>& dt, const std::vector<BBox>& gt,
                             const std::vector<uint8_t>& iscrowd);

}  // namespace maskrcnn
