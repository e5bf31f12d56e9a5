#include "modeling/matcher.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "maskrcnn/error.h"

namespace maskrcnn::modeling {

Matcher::Matcher(double high_threshold, double low_threshold, bool allow_low_quality_matches)
    : high_(high_threshold), low_(low_threshold), allow_low_quality_(allow_low_quality_matches) {
  if (low_threshold > high_threshold) throw Error("Matcher: low threshold above high threshold");
}

at::Tensor Matcher::operator()(const at::Tensor& quality) const {
  TORCH_CHECK(quality.size(0) > 0, "Matcher: no ground-truth boxes");
  TORCH_CHECK(quality.size(1) > 0, "Matcher: no proposals");
  auto [matched_vals, matches] = quality.max(0);
  at::Tensor all_matches;
  if (allow_low_quality_) all_matches = matches.clone();
  auto below = matched_vals < low_;
  auto between = (matched_vals >= low_) & (matched_vals < high_);
  matches.masked_fill_(below, kBelowLowThreshold);
  matches.masked_fill_(between, kBetweenThresholds);
  if (allow_low_quality_) {
    // Every gt keeps the predictions that overlap it best (ties included),
    // even below the low threshold.
    auto highest_per_gt = std::get<0>(quality.max(1));
    auto pairs = at::where(quality == highest_per_gt.unsqueeze(1));
    auto preds = pairs[1];
    matches.index_put_({preds}, all_matches.index_select(0, preds));
  }
  return matches;
}

std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>>
BalancedPositiveNegativeSampler::operator()(const std::vector<at::Tensor>& labels,
                                            const std::vector<uint64_t>& seeds) const {
  std::vector<at::Tensor> pos_masks, neg_masks;
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto& l = labels[i];
    auto positive = at::where(l >= 1)[0];
    auto negative = at::where(l == 0)[0];
    const int64_t num_pos =
        std::min<int64_t>(positive.numel(), static_cast<int64_t>(batch_size_ * positive_fraction_));
    const int64_t num_neg = std::min<int64_t>(negative.numel(), batch_size_ - num_pos);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seeds.at(i));
    auto cpu_long = at::TensorOptions(at::kLong);
    auto perm1 = at::randperm(positive.numel(), gen, cpu_long).slice(0, 0, num_pos).to(l.device());
    auto perm2 = at::randperm(negative.numel(), gen, cpu_long).slice(0, 0, num_neg).to(l.device());
    auto pos_mask = at::zeros_like(l, l.options().dtype(at::kBool));
    auto neg_mask = at::zeros_like(l, l.options().dtype(at::kBool));
    pos_mask.index_put_({positive.index_select(0, perm1)}, true);
    neg_mask.index_put_({negative.index_select(0, perm2)}, true);
    pos_masks.push_back(pos_mask);
    neg_masks.push_back(neg_mask);
  }
  return {pos_masks, neg_masks};
}

}  // namespace maskrcnn::modeling
