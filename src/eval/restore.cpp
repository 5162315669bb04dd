#include "pae/eval/restore.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pae/data/npy.h"
#include "pae/eval/evaluate.h"
#include "pae/eval/pae.h"
#include "pae/flows/latent_flow.h"
#include "pae/models/autoencoder.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/image.h"

namespace pae::eval {

namespace {

/// Turns off parameter gradients of the bundle's networks while alive (the MAP differentiates
/// in u only; parameter gradients would be computed and thrown away at every step).
class FrozenParameters {
 public:
  explicit FrozenParameters(Pae& pae) {
    for (auto& p : pae.ae().parameters()) params_.push_back(p);
    if (pae.flow())
      for (auto& p : pae.flow()->parameters()) params_.push_back(p);
    for (auto& p : params_) {
      flags_.push_back(p.requires_grad());
      p.requires_grad_(false);
    }
  }
  ~FrozenParameters() {
    for (size_t i = 0; i < params_.size(); ++i) params_[i].requires_grad_(flags_[i]);
  }

 private:
  std::vector<torch::Tensor> params_;
  std::vector<bool> flags_;
};

/// The generator of the posterior: u (the flow's Gaussian space, or latent space without a
/// flow) -> images in [0, 1], differentiable in u.
inference::Generator generator_of(Pae& pae) {
  return [&pae](const at::Tensor& u) {
    at::Tensor z = u;
    if (auto* flow = pae.flow()) {
      const auto p = flow->parameters().front();
      z = flow->from_gaussian(u.to(p.scalar_type()));
    }
    return pae.ae().decode(z.to(torch::kFloat32));
  };
}

}  // namespace

at::Tensor residual_sigma(Pae& pae, int64_t n) {
  const auto val = load_set(pae.config().data.name + ":val", pae.config(), pae.image_shape(), n);
  const auto residual = val.images - pae.reconstruct(val.images);
  return residual.pow(2).mean(0).sqrt().clamp_min(1e-3);
}

std::string weights_checksum(Pae& pae) {
  std::vector<at::Tensor> parts;
  for (const auto& p : pae.ae().parameters()) parts.push_back(p.detach().to(torch::kCPU, torch::kFloat32).flatten());
  for (const auto& b : pae.ae().buffers())
    if (b.is_floating_point()) parts.push_back(b.detach().to(torch::kCPU, torch::kFloat32).flatten());
  return flows::latent_checksum(torch::cat(parts));
}

at::Tensor stored_residual_sigma(Pae& pae, int64_t n, std::string* source) {
  const auto set = pae.config().data.name + ":val";
  if (pae.ae_run().empty()) {
    if (source) *source = "computed on " + std::to_string(n) + " images of " + set + " (not stored)";
    return residual_sigma(pae, n);
  }
  const auto dir = fs::path(pae.ae_run()) / "residual_sigma";
  const auto npy = dir / (pae.checkpoint() + ".npy"), meta = dir / (pae.checkpoint() + ".json");
  const nlohmann::json want = {{"set", set}, {"images", n}, {"weights_checksum", weights_checksum(pae)}};
  if (fs::exists(meta) && fs::exists(npy)) {
    nlohmann::json have;
    try {
      have = nlohmann::json::parse(read_text(meta));
    } catch (const std::exception&) {
    }
    if (have.is_object() && have.value("set", "") == set && have.value("images", int64_t(-1)) == n &&
        have.value("weights_checksum", "") == want["weights_checksum"]) {
      const auto sigma = data::read_npy(npy.string());
      const auto shape = pae.image_shape();
      require(sigma.sizes() == at::IntArrayRef(shape) && torch::all(sigma > 0).item<bool>(),
              npy.string() +
                  ": expected the stored residual sigma, positive, of shape [C,H,W] of the images; "
                  "delete it to compute it again");
      if (source) *source = npy.string();
      return sigma.to(torch::kFloat32);
    }
    spdlog::warn("{} was made for other weights, set or image count: computing it again", npy.string());
  }
  const auto sigma = residual_sigma(pae, n);
  try {
    ensure_dir(dir);
    data::write_npy(npy.string(), sigma);
    atomic_write_text(meta, want.dump(1) + "\n");
    if (source) *source = npy.string() + " (computed now on " + std::to_string(n) + " images of " + set + ")";
  } catch (const std::exception& e) {
    spdlog::warn("could not store the residual sigma in {}: {}", dir.string(), e.what());
    if (source) *source = "computed on " + std::to_string(n) + " images of " + set + " (not stored)";
  }
  return sigma;
}

Restoration restore(Pae& pae, const at::Tensor& truth, const data::Corruption& c, const RestoreOptions& o) {
  require(truth.dim() == 4 && truth.size(0) > 0, "restore: expected images [N, C, H, W]");
  require(o.samples >= 2, "restore: at least 2 posterior samples are needed for a std");
  Restoration r;
  r.truth = truth.to(torch::kCPU, torch::kFloat32);
  auto corrupted = data::corrupt(c, r.truth, o.seed);
  r.corrupted = corrupted.x;
  // For noise every pixel is observed (noisily) and none is kept as it is.
  r.kept = c.is_noise() ? torch::zeros_like(corrupted.observed) : corrupted.observed;
  const bool bernoulli = o.map.likelihood == inference::Likelihood::bernoulli;
  require(!bernoulli || !c.is_noise(),
          "the Bernoulli likelihood applies to masks (observed pixels as they are); for noise use gaussian");
  r.residual_sigma = stored_residual_sigma(pae, 2000, &r.residual_source);
  r.sigma = c.is_noise() ? (r.residual_sigma.pow(2) + c.sigma * c.sigma).sqrt() : r.residual_sigma;
  const int64_t n = r.truth.size(0), s = o.samples;
  const auto device = pae.ae().parameters().front().device();
  const int64_t dim = pae.flow() ? pae.flow()->dim() : pae.ae().latent_dim();
  FrozenParameters frozen(pae);
  const auto g = generator_of(pae);
  const auto x = r.corrupted.to(device), obs = corrupted.observed.to(device), sigma = r.sigma.to(device);
  auto mo = o.map;
  mo.seed = o.seed + 1;
  const auto map = inference::map_estimate(g, dim, x, obs, sigma, mo);
  r.objective = map.objective.to(torch::kCPU);
  at::Tensor fisher_sigma = sigma;
  if (bernoulli) {
    torch::NoGradGuard no_grad;
    fisher_sigma = inference::bernoulli_sigma(g(map.u));
  }
  const auto hessian = inference::gauss_newton(g, map.u, obs, fisher_sigma).to(map.u.scalar_type());
  auto u = inference::laplace_samples(map.u, hessian, s, o.seed + 2);
  auto co = o.chain;
  co.seed = o.seed + 3;
  const auto chain = inference::posterior_chain(g, u, map.u, hessian, x, obs, sigma, o.map.likelihood, co);
  u = chain.u;
  r.accepted = chain.accepted;
  torch::NoGradGuard no_grad;
  const auto at_map = g(map.u).to(torch::kCPU);
  std::vector<at::Tensor> parts;
  const int64_t chunk = std::max<int64_t>(1, 4096 / s);
  for (int64_t i = 0; i < n; i += chunk) {
    const auto ui = u.slice(0, i, std::min(n, i + chunk));
    parts.push_back(g(ui.reshape({-1, dim})).to(torch::kCPU).view({ui.size(0), s, x.size(1), x.size(2), x.size(3)}));
  }
  r.samples = torch::cat(parts);
  r.mean = r.samples.mean(1);
  r.std = r.samples.std(1);
  const auto& keep = r.kept;
  r.map = torch::where(keep, r.corrupted, at_map);
  r.mean = torch::where(keep, r.corrupted, r.mean);
  r.std = torch::where(keep, torch::zeros_like(r.std), r.std);
  // Baselines: the training-mean image in the missing pixels; the AE on the corrupted image
  // (for masks iterated: the observed pixels put back after each reconstruction).
  const auto train = load_set(pae.config().data.name + ":train", pae.config(), pae.image_shape(), 5000);
  const auto mean_image = train.images.mean(0, true).expand_as(r.truth);
  r.mean_fill = c.is_noise() ? mean_image.clone() : torch::where(keep, r.corrupted, mean_image);
  if (c.is_noise()) {
    r.ae_fill = pae.reconstruct(r.corrupted);
  } else {
    auto cur = r.mean_fill;
    for (int k = 0; k < 10; ++k) cur = torch::where(keep, r.corrupted, pae.reconstruct(cur));
    r.ae_fill = cur;
  }
  return r;
}

double corrupted_mse(const Restoration& r, const at::Tensor& estimate) {
  const auto m = r.kept.logical_not();
  return (estimate - r.truth).pow(2).masked_select(m).to(torch::kFloat64).mean().item<double>();
}

std::vector<double> coverage(const Restoration& r, const std::vector<double>& levels) {
  const auto m = r.kept.logical_not();
  const auto dev = (r.truth - r.mean).abs().masked_select(m).to(torch::kFloat64);
  const auto sd = (r.std.pow(2) + r.residual_sigma.pow(2).expand_as(r.std)).sqrt().masked_select(m).to(torch::kFloat64);
  std::vector<double> out;
  for (double p : levels) {
    require(p > 0 && p < 1, "coverage: levels must lie in (0, 1)");
    const double z = std::sqrt(2.0) * torch::erfinv(torch::tensor(p, torch::kFloat64)).item<double>();
    out.push_back((dev <= z * sd).to(torch::kFloat64).mean().item<double>());
  }
  return out;
}

std::string write_restoration(Pae& pae, const Restoration& r, const data::Corruption& c, const RestoreOptions& o,
                              double seconds, const std::string& dir) {
  ensure_dir(dir);
  const auto path = [&](const std::string& name) { return (fs::path(dir) / name).string(); };
  nlohmann::json errors;
  const std::vector<std::pair<std::string, at::Tensor>> estimates = {
      {"map", r.map}, {"posterior_mean", r.mean}, {"mean_fill", r.mean_fill}, {"ae", r.ae_fill}};
  for (const auto& [name, t] : estimates) {
    const double mse = corrupted_mse(r, t);
    errors[name] = {{"mse", mse}, {"psnr_db", 10 * std::log10(1.0 / std::max(mse, 1e-12))}};
  }
  const std::vector<double> levels = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95, 0.99};
  const auto cov = coverage(r, levels);
  nlohmann::json curve = nlohmann::json::array();
  for (size_t i = 0; i < levels.size(); ++i) curve.push_back({{"level", levels[i]}, {"coverage", cov[i]}});
  const nlohmann::json report = {
      {"ae_run", pae.ae_run()},
      {"checkpoint", pae.checkpoint()},
      {"flow", pae.flow_run()},
      {"latent_space", pae.has_flow() ? "the flow's Gaussian space, prior N(0, I)" : "latent z, prior N(0, I)"},
      {"corruption", c.spec},
      {"seed", o.seed},
      {"images", r.truth.size(0)},
      {"restored_pixels", r.kept.logical_not().sum().item<int64_t>()},
      {"likelihood",
       o.map.likelihood == inference::Likelihood::bernoulli
           ? "Bernoulli on observed pixels (the decoder's output is the mean)"
           : "Gaussian on observed pixels; sigma = the AE's validation residual RMS per pixel (floor 1e-3)"
             ", in quadrature with the noise sigma"},
      {"residual_sigma", r.residual_source},
      {"mean_likelihood_sigma", r.sigma.mean().item<double>()},
      {"intervals", "posterior mean +- z sqrt(posterior var + residual sigma^2), for the clean pixels"},
      {"map",
       {{"steps", o.map.steps},
        {"lr", o.map.lr},
        {"lr_final", o.map.lr_final},
        {"restarts", o.map.restarts},
        {"init_std", o.map.init_std},
        {"mean_objective", r.objective.mean().item<double>()}}},
      {"posterior",
       {{"method", o.chain.steps > 0 ? "Laplace at the MAP (Gauss-Newton Hessian), then Metropolis-adjusted "
                                       "Langevin chains in the Laplace-whitened space, one per sample"
                                     : "Laplace at the MAP, Gauss-Newton Hessian"},
        {"samples", o.samples},
        {"chain_steps", o.chain.steps},
        {"chain_step", o.chain.step},
        {"chain_acceptance", r.accepted}}},
      {"errors_on_restored_pixels", errors},
      {"coverage_68", cov[6]},
      {"coverage_95", cov[10]},
      {"reliability", curve},
      {"seconds", seconds}};
  const auto text = report.dump(1) + "\n";
  for (const auto& [name, t] : std::vector<std::pair<std::string, at::Tensor>>{{"truth", r.truth},
                                                                               {"corrupted", r.corrupted},
                                                                               {"kept", r.kept.to(torch::kUInt8)},
                                                                               {"map", r.map},
                                                                               {"posterior_mean", r.mean},
                                                                               {"posterior_std", r.std},
                                                                               {"mean_fill", r.mean_fill},
                                                                               {"ae", r.ae_fill}})
    data::write_npy(path(name + ".npy"), t);
  // Panels: one row per image (at most 8).
  const int64_t rows = std::min<int64_t>(8, r.truth.size(0));
  std::vector<at::Tensor> tiles;
  const auto std_scale = r.std.max().clamp_min(1e-12);
  for (int64_t i = 0; i < rows; ++i) {
    for (const auto& t : {r.truth[i], r.corrupted[i], r.map[i], r.mean[i], r.std[i] / std_scale}) tiles.push_back(t);
    for (int64_t k = 0; k < 3; ++k) tiles.push_back(r.samples[i][std::min<int64_t>(k, r.samples.size(1) - 1)]);
  }
  save_image_grid(torch::stack(tiles).clamp(0, 1), 8, path("panels.png"));
  atomic_write_text(path("restore.json"), text);
  return text;
}

std::string number_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string restore_folder(const data::Corruption& c) {
  std::string name = c.is_noise() ? "denoise_" + c.spec.substr(6) : "inpaint_" + c.spec;
  for (auto& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') ch = '_';
  return name;
}

std::string run_restore(Pae& pae, const std::string& set, int64_t n, const data::Corruption& c, const RestoreOptions& o,
                        const std::string& dir) {
  const auto images =
      load_set(set.empty() ? pae.config().data.name + ":test" : set, pae.config(), pae.image_shape(), n);
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = restore(pae, images.images, c, o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_restoration(pae, r, c, o, seconds, dir);
  char line[512];
  std::snprintf(line, sizeof line,
                "%s on %lld images of %s (%.1f s): MSE on restored pixels: MAP %.5f, posterior mean %.5f, mean "
                "image %.5f, AE %.5f; coverage of the 68%% / 95%% intervals %.3f / %.3f",
                c.spec.c_str(), static_cast<long long>(images.size()), images.name.c_str(), seconds,
                corrupted_mse(r, r.map), corrupted_mse(r, r.mean), corrupted_mse(r, r.mean_fill),
                corrupted_mse(r, r.ae_fill), coverage(r, {0.68})[0], coverage(r, {0.95})[0]);
  return line;
}

}  // namespace pae::eval
