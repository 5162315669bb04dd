#include "pae/inference/langevin.h"

#include <torch/torch.h>

#include "pae/util/error.h"

namespace pae::inference {

namespace {

at::Tensor project(const at::Tensor& x) {
  const auto flat = x.flatten(1);
  return (flat / flat.norm(2, 1, true).clamp_min(1e-12)).view_as(x);
}

}  // namespace

at::Tensor langevin(const Energy& energy, const at::Tensor& x0, const LangevinOptions& o, LangevinStats* stats) {
  require(o.steps >= 0 && o.step_size >= 0 && o.noise >= 0 && o.temperature > 0,
          "Langevin: steps, step size and noise must be >= 0 and the temperature > 0");
  torch::AutoGradMode grad_on(true);  // chains need gradients even inside a no-grad evaluation
  auto x = x0.detach().clone();
  if (o.sphere) x = project(x);
  if (o.clamp) x = x.clamp(o.clamp_min, o.clamp_max);
  double grad_norm = 0, clipped = 0, e_start = 0, e_end = 0;
  for (int64_t t = 0; t < o.steps; ++t) {
    x.requires_grad_(true);
    const auto e = energy(x);
    TORCH_CHECK(e.dim() == 1 && e.size(0) == x.size(0), "Langevin: the energy must return [B], got ", e.sizes());
    if (t == 0) e_start = e.mean().item<double>();
    auto g = torch::autograd::grad({e.sum()}, {x})[0];
    x = x.detach();
    const auto norms = g.flatten(1).norm(2, 1);
    grad_norm += norms.mean().item<double>();
    if (o.grad_clip > 0) {
      const auto scale = (o.grad_clip / norms.clamp_min(1e-12)).clamp_max(1.0);
      clipped += (norms > o.grad_clip).to(torch::kFloat64).mean().item<double>();
      std::vector<int64_t> shape(size_t(g.dim()), 1);
      shape[0] = -1;
      g = g * scale.view(shape);
    }
    const double sigma = o.anneal_noise ? o.noise / double(1 + t) : o.noise;
    const auto xi = o.generator.defined()
                        ? at::randn(x.sizes(), o.generator, x.options().device(torch::kCPU)).to(x.device())
                        : torch::randn_like(x);
    x = x - o.step_size / o.temperature * g + sigma * xi;
    if (o.sphere) x = project(x);
    if (o.clamp) x = x.clamp(o.clamp_min, o.clamp_max);
  }
  if (stats) {
    {
      torch::NoGradGuard no_grad;
      e_end = energy(x).mean().item<double>();
    }
    if (o.steps == 0) e_start = e_end;
    *stats = {e_start, e_end, o.steps ? grad_norm / double(o.steps) : 0.0, o.steps ? clipped / double(o.steps) : 0.0};
  }
  return x.detach();
}

}  // namespace pae::inference
