// engine::SGD against torch.optim.SGD's update (dampening 0, no Nesterov),
// written out here step by step in double precision:
//   d = grad + weight_decay * p
//   buf = d on a parameter's first step, else momentum * buf + d
//   p = p - lr * buf
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>

#include "engine/sgd.h"
#include "maskrcnn/error.h"

using maskrcnn::engine::SGD;

namespace {

at::Tensor param(std::vector<double> values) {
  return at::tensor(values, at::kDouble).requires_grad_(true);
}

void set_grad(at::Tensor& p, std::vector<double> values) { p.mutable_grad() = at::tensor(values, at::kDouble); }

TEST(Sgd, ThreeStepsMatchTorchOptimSgd) {
  const double momentum = 0.9, wd = 0.1;
  const std::vector<double> lrs{0.5, 0.25, 0.1};
  const std::vector<std::vector<double>> grads{{1.0, -2.0}, {0.5, 0.5}, {-1.0, 3.0}};
  at::Tensor p = param({1.0, 2.0});
  at::Tensor frozen = param({7.0});  // never gets a gradient
  SGD sgd({{"p", p}, {"frozen", frozen}}, momentum, wd);

  // By hand, element by element.
  std::vector<double> x{1.0, 2.0}, buf(2);
  for (int step = 0; step < 3; ++step) {
    for (int i = 0; i < 2; ++i) {
      const double d = grads[step][i] + wd * x[i];
      buf[i] = step == 0 ? d : momentum * buf[i] + d;
      x[i] -= lrs[step] * buf[i];
    }
    set_grad(p, grads[step]);
    sgd.step(lrs[step]);
    for (int i = 0; i < 2; ++i) {
      EXPECT_NEAR(p[i].item<double>(), x[i], 1e-15) << "step " << step << " element " << i;
      EXPECT_NEAR(sgd.momentum_buffers().at("p")[i].item<double>(), buf[i], 1e-15) << "step " << step;
    }
  }
  // The values, written out:
  // step 0: d = [1.1, -1.8], buf = d, p = [0.45, 2.9]
  // step 1: d = [0.545, 0.79], buf = [1.535, -0.83], p = [0.06625, 3.1075]
  // step 2: d = [-0.993375, 3.31075], buf = [0.388125, 2.56375], p = [0.0274375, 2.851125]
  EXPECT_NEAR(p[0].item<double>(), 0.0274375, 1e-12);
  EXPECT_NEAR(p[1].item<double>(), 2.851125, 1e-12);
  EXPECT_EQ(frozen.item<double>(), 7.0) << "a parameter without a gradient moved";
  EXPECT_EQ(sgd.momentum_buffers().count("frozen"), 0u);
}

TEST(Sgd, WithoutMomentumOrDecayItIsPlainGradientDescent) {
  at::Tensor p = param({1.0, -1.0});
  SGD sgd({{"p", p}}, 0.0, 0.0);
  set_grad(p, {2.0, 4.0});
  sgd.step(0.5);
  EXPECT_TRUE(at::allclose(p, at::tensor({0.0, -3.0}, at::kDouble)));
  EXPECT_TRUE(sgd.momentum_buffers().empty());
}

TEST(Sgd, ZeroGradDropsTheGradients) {
  at::Tensor a = param({1.0}), b = param({2.0});
  SGD sgd({{"a", a}, {"b", b}}, 0.9, 0.0);
  set_grad(a, {3.0});
  sgd.zero_grad();
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  sgd.step(1.0);  // nothing to apply
  EXPECT_EQ(a.item<double>(), 1.0);
}

TEST(Sgd, ClipGradNormScalesToTheJointNormAndReturnsItBefore) {
  at::Tensor a = param({3.0, 0.0}), b = param({0.0});
  SGD sgd({{"a", a}, {"b", b}}, 0.0, 0.0);
  set_grad(a, {3.0, 4.0});
  set_grad(b, {12.0});
  // Joint norm sqrt(9 + 16 + 144) = 13.
  EXPECT_DOUBLE_EQ(sgd.clip_grad_norm(6.5), 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);  // torch.nn.utils.clip_grad_norm_
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * coef, 1e-12);
  EXPECT_NEAR(a.grad()[1].item<double>(), 4.0 * coef, 1e-12);
  EXPECT_NEAR(b.grad()[0].item<double>(), 12.0 * coef, 1e-12);
  // Under the limit: returned, not scaled.
  EXPECT_NEAR(sgd.clip_grad_norm(100.0), 6.5, 1e-5);
  EXPECT_NEAR(b.grad()[0].item<double>(), 12.0 * coef, 1e-12);
}

TEST(Sgd, ClipGradNormWithoutGradientsIsZero) {
  at::Tensor a = param({1.0});
  SGD sgd({{"a", a}}, 0.9, 0.0);
  EXPECT_EQ(sgd.clip_grad_norm(1.0), 0.0);
}

// Three steps straight vs one step, a new optimizer on the saved momentum
// (what a resumed run does), two more steps: the same values, bit for bit.
TEST(Sgd, ResumingFromTheMomentumBufferEqualsAnUninterruptedRun) {
  const std::vector<std::vector<double>> grads{{0.3, -0.7, 1.1}, {-0.2, 0.9, 0.4}, {0.6, 0.1, -0.5}};
  const std::vector<double> lrs{0.1, 0.05, 0.02};
  at::Tensor straight = param({0.5, 1.5, -2.0});
  SGD a({{"w", straight}}, 0.9, 1e-4);
  for (int s = 0; s < 3; ++s) {
    set_grad(straight, grads[s]);
    a.step(lrs[s]);
  }

  at::Tensor first = param({0.5, 1.5, -2.0});
  SGD b({{"w", first}}, 0.9, 1e-4);
  set_grad(first, grads[0]);
  b.step(lrs[0]);
  at::Tensor resumed = first.detach().clone().requires_grad_(true);  // as loaded from a checkpoint
  SGD c({{"w", resumed}}, 0.9, 1e-4);
  c.set_momentum_buffer("w", b.momentum_buffers().at("w"));
  for (int s = 1; s < 3; ++s) {
    set_grad(resumed, grads[s]);
    c.step(lrs[s]);
  }
  EXPECT_TRUE(resumed.equal(straight)) << resumed << straight;
  EXPECT_TRUE(c.momentum_buffers().at("w").equal(a.momentum_buffers().at("w")));

  // Without the buffer the second step would start momentum afresh: different.
  at::Tensor fresh = first.detach().clone().requires_grad_(true);
  SGD d({{"w", fresh}}, 0.9, 1e-4);
  set_grad(fresh, grads[1]);
  d.step(lrs[1]);
  set_grad(fresh, grads[2]);
  d.step(lrs[2]);
  EXPECT_FALSE(fresh.equal(straight));
}

TEST(Sgd, SetMomentumBufferChecksNameAndShape) {
  at::Tensor w = param({1.0, 2.0});
  SGD sgd({{"w", w}}, 0.9, 0.0);
  EXPECT_THROW(sgd.set_momentum_buffer("w", at::zeros({3}, at::kDouble)), maskrcnn::Error);
  EXPECT_THROW(sgd.set_momentum_buffer("v", at::zeros({2}, at::kDouble)), maskrcnn::Error);
  // A float buffer is stored in the parameter's dtype.
  sgd.set_momentum_buffer("w", at::ones({2}, at::kFloat));
  EXPECT_EQ(sgd.momentum_buffers().at("w").scalar_type(), at::kDouble);
}

}  // namespace

namespace {

// engine::AdamW against torch.optim.AdamW's single-tensor update (amsgrad
// off), written out step by step in double precision:
//   p *= 1 - lr * wd
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
TEST(AdamW, ThreeStepsMatchTorchOptimAdamW) {
  const double wd = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const std::vector<double> lrs{0.1, 0.05, 0.01};
  const std::vector<std::vector<double>> grads{{1.0, -2.0}, {0.5, 0.5}, {-1.0, 3.0}};
  at::Tensor p = param({1.0, 2.0});
  at::Tensor frozen = param({7.0});
  maskrcnn::engine::AdamW adam({{"p", p}, {"frozen", frozen}}, wd, b1, b2, eps);
  std::vector<double> x{1.0, 2.0}, m(2, 0.0), v(2, 0.0);
  for (int step = 0; step < 3; ++step) {
    const int t = step + 1;
    for (int i = 0; i < 2; ++i) {
      const double g = grads[step][i];
      x[i] *= 1 - lrs[step] * wd;
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      x[i] -= lrs[step] / (1 - std::pow(b1, t)) * m[i] / (std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, t)) + eps);
    }
    set_grad(p, grads[step]);
    adam.step(lrs[step]);
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(p[i].item<double>(), x[i], 1e-14) << "step " << step << " element " << i;
  }
  // The first step moves each element by about lr (Adam's normalised step).
  EXPECT_EQ(frozen.item<double>(), 7.0);
  // The state round-trips: a second optimizer given it takes the same 4th step.
  at::Tensor q = param({p[0].item<double>(), p[1].item<double>()});
  maskrcnn::engine::AdamW resumed({{"p", q}}, wd, b1, b2, eps);
  for (auto& [key, value] : adam.state())
    if (key.find("frozen") == std::string::npos) resumed.set_state(key, value);
  set_grad(p, {0.3, -0.7});
  set_grad(q, {0.3, -0.7});
  adam.step(0.02);
  resumed.step(0.02);
  EXPECT_TRUE(p.equal(q));
  EXPECT_THROW(resumed.set_state("momentum.p", at::zeros({2}, at::kDouble)), maskrcnn::Error);
}

TEST(Optimizers, MakeOptimizerKnowsSgdAndAdamW) {
  at::Tensor p = param({1.0});
  EXPECT_NE(dynamic_cast<SGD*>(maskrcnn::engine::make_optimizer("sgd", {{"p", p}}, 0.9, 0).get()), nullptr);
  EXPECT_NE(dynamic_cast<maskrcnn::engine::AdamW*>(maskrcnn::engine::make_optimizer("adamw", {{"p", p}}, 0.9, 0).get()),
            nullptr);
  EXPECT_THROW(maskrcnn::engine::make_optimizer("adam", {{"p", p}}, 0.9, 0), maskrcnn::Error);
  SGD sgd({{"p", p}}, 0.9, 0);
  EXPECT_THROW(sgd.set_state("exp_avg.p", at::zeros({1}, at::kDouble)), maskrcnn::Error);
}

}  // namespace

// The fused CPU loop (float, contiguous, more elements than one parallel
// chunk) against torch.optim.AdamW's tensor operations, and the fallback
// (a non-contiguous parameter) against the same; the parameter's version moves
// as with in-place operations, so caches keyed on it see the new values.
TEST(AdamW, FusedLoopMatchesTheTensorOperations) {
  const double lr = 1e-3, wd = 0.05, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  at::manual_seed(3);
  at::Tensor p = at::randn({70001});
  at::Tensor q = at::randn({64, 48}).t();  // not contiguous: the tensor operations
  at::Tensor p_ref = p.clone(), q_ref = q.clone(), m = at::zeros_like(p), v = at::zeros_like(p);
  at::Tensor qm = at::zeros_like(q_ref), qv = at::zeros_like(q_ref);
  p.set_requires_grad(true);
  q.set_requires_grad(true);
  maskrcnn::engine::AdamW adam({{"p", p}, {"q", q}}, wd, b1, b2, eps);
  for (int t = 1; t <= 3; ++t) {
    at::Tensor g = at::randn({70001}), gq = at::randn({48, 64});
    p.mutable_grad() = g;
    q.mutable_grad() = gq;
    const auto version = p._version();
    adam.step(lr);
    EXPECT_GT(p._version(), version);
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (auto [x, grad, mm, vv] : {std::tuple{p_ref, g, m, v}, std::tuple{q_ref, gq, qm, qv}}) {
      x.mul_(1 - lr * wd);
      mm.mul_(b1).add_(grad, 1 - b1);
      vv.mul_(b2).addcmul_(grad, grad, 1 - b2);
      x.addcdiv_(mm, (vv.sqrt() / std::sqrt(bc2)).add_(eps), -lr / bc1);
    }
    EXPECT_TRUE(at::allclose(p.detach(), p_ref, 1e-6, 1e-7)) << "step " << t;
    EXPECT_TRUE(at::allclose(q.detach(), q_ref, 0, 0)) << "step " << t;
  }
  // The moments were written too: the saved state is the reference's.
  int checked = 0;
  for (auto& [key, value] : adam.state()) {
    if (key == "exp_avg.p") {
      EXPECT_TRUE(at::allclose(value, m, 1e-5, 1e-6)) << (value - m).abs().max().item<double>();
      ++checked;
    }
    if (key == "exp_avg_sq.p") {
      EXPECT_TRUE(at::allclose(value, v, 1e-5, 1e-8)) << (value - v).abs().max().item<double>();
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2);
}
