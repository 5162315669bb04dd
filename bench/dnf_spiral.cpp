#include "dnf_spiral.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "pae/flows/dnf.h"
#include "pae/flows/thin_spiral.h"
#include "pae/report/svg.h"
#include "pae/train/engine.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"

using pae::flows::ThinSpiral;

namespace {

/// The authors' thin-spiral DNF: 9 rational-quadratic outer layers (5 bins, tail bound 3) with
/// LU-linear layers between them, residual conditioners; sigma^2 = 0.01, lambda = 1.
pae::flows::DnfOptions authors_options() {
  pae::flows::DnfOptions o;
  o.sigma = 0.1;
  o.outer.layers = 9;
  o.outer.bins = 5;
  o.outer.tail_bound = 3;
  o.outer.hidden = 64;
  o.outer.conditioner = "resnet";
  o.inner = o.outer;
  o.inner.layers = 3;
  return o;
}

std::vector<double> to_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

}  // namespace

int bench_dnf_spiral(int64_t epochs, const std::string& out_dir) {
  torch::manual_seed(0);
  auto dnf = std::make_shared<pae::flows::DenoisingFlow>(authors_options());
  const auto train = ThinSpiral::sample(9000, 1).to(torch::kFloat32);
  const auto val = ThinSpiral::sample(1000, 2).to(torch::kFloat32);
  pae::train::EngineOptions e;
  e.epochs = epochs;
  e.batch_size = 100;
  e.unit = "pt";
  e.rate_key = "points_per_s";
  auto& opt = e.optimizers[""];
  opt.name = "adamw";
  opt.lr = 3e-4;
  opt.weight_decay = 1e-4;
  opt.grad_clip = 5;
  opt.schedule = "cosine";  // the authors restart it every 50 epochs; ours runs once over all
  pae::train::TrainData data;
  data.size = train.size(0);
  data.batch = [&](const torch::Tensor& idx) { return pae::nn::Batch{train.index_select(0, idx), {}}; };
  data.validation = {val, {}};
  const auto t0 = std::chrono::steady_clock::now();
  pae::train::Engine(e).fit(*dnf, data);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  torch::NoGradGuard no_grad;
  dnf->eval();
  // The density of the position z along the curve: the learned one is the DNF's density on the
  // manifold (per unit length of it) at the curve's points, times the length per unit z,
  // |dx/dz| = sqrt(1 + z^2) / 3.
  const double z_max = 3 * M_PI * std::sqrt(-ThinSpiral::kScale * std::log(1e-6));  // all but 1e-6 of the mass
  const int64_t n = 20001;
  const auto z = torch::linspace(z_max / n, z_max, n, torch::kFloat64);
  const double dz = z_max / n;
  const auto truth = ThinSpiral::log_density_of_position(z).exp();
  const auto on_curve = dnf->log_prob_on_manifold(ThinSpiral::point(z).to(torch::kFloat32)).to(torch::kFloat64);
  const auto learned_raw = on_curve.exp() * (1 + z.pow(2)).sqrt() / 3;
  const double mass = learned_raw.sum().item<double>() * dz;
  const auto learned = learned_raw / mass;  // compared as distributions on the grid
  const double ks = (truth.cumsum(0) - learned.cumsum(0)).abs().max().item<double>() * dz;
  const double kl =
      (truth * (truth.clamp_min(1e-300).log() - learned.clamp_min(1e-300).log())).sum().item<double>() * dz;
  const auto samples = dnf->sample(10000, 1.0).to(torch::kFloat64);
  const auto curve = ThinSpiral::point(torch::linspace(0, z_max, 40001, torch::kFloat64));
  double distance = 0;
  for (int64_t at = 0; at < samples.size(0); at += 1000)
    distance += std::get<0>(torch::cdist(samples.slice(0, at, at + 1000), curve).min(1)).sum().item<double>();
  distance /= double(samples.size(0));
  const auto val_terms = dnf->validate({val, {}}, 1000);

  pae::JsonObject out;
  out.add("model", std::string("dnf")).add("set", std::string("thin-spiral")).add("epochs", epochs);
  out.add("ks", ks).add("kl", kl).add("mass_on_curve", mass).add("sample_distance", distance);
  out.add("val_nll", val_terms.at("nll")).add("val_recon", val_terms.at("recon")).add("seconds", seconds);
  std::printf("%s\n", out.str().c_str());
  pae::ensure_dir(out_dir);
  pae::report::PlotOptions plot;
  plot.title = "thin spiral: density of the position along the curve (KS " + pae::report::tick_label(ks) + ")";
  plot.x_label = "z";
  plot.y_label = "p(z)";
  const auto zs = to_vector(z.slice(0, 0, n, 20));
  pae::atomic_write_text(pae::fs::path(out_dir) / "dnf_spiral.svg",
                         pae::report::line_plot({{"true", zs, to_vector(truth.slice(0, 0, n, 20))},
                                                 {"DNF", zs, to_vector(learned.slice(0, 0, n, 20))}},
                                                plot));
  pae::atomic_write_text(pae::fs::path(out_dir) / "dnf_spiral.json", out.str() + "\n");
  spdlog::info("wrote {}/dnf_spiral.svg and dnf_spiral.json", out_dir);
  return 0;
}
