#include "pae/models/nae.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <exception>
#include <thread>

#include "pae/util/error.h"

namespace pae::models {

namespace {

torch::Tensor to_sphere(const torch::Tensor& h) { return h / h.norm(2, 1, true).clamp_min(1e-12); }

}  // namespace

void NaeOptions::visit(OptionVisitor& v, const ModelOptions& /*model*/) {
  v("nae_epochs", nae_epochs, at_least(0).resumable());  // phase lengths
  v("nae_batches", nae_batches, at_least(0).resumable());
  v("gamma", gamma, at_least(0));
  v("temperature", temperature, positive());
  v("encoder_l2", encoder_l2, at_least(0));
  v("buffer_size", buffer_size, positive());
  v("replay_ratio", replay_ratio, in_range(0, 1));
  v("z_steps", z_steps, at_least(0));
  v("z_step_size", z_step_size, at_least(0));
  v("z_noise", z_noise, at_least(0));
  v("x_steps", x_steps, at_least(0));
  v("x_step_size", x_step_size, at_least(0));
  v("x_noise", x_noise, at_least(0));
  v("x_grad_clip", x_grad_clip, at_least(0));
  v("x_grad_clip_per", x_grad_clip_per, one_of({"sample", "row"}));
  v("chain_groups", chain_groups, positive());
}

NormalizedAE::NormalizedAE(const ModelOptions& o, const ImageShape& s)
    : AutoEncoder(o, s), nae_(o.family<NaeOptions>()) {
  require(o.recon_loss == "mse",
          "model.recon_loss '" + o.recon_loss + "' for type nae: the energy is the MSE; use mse");
  encoder_ = register_module("encoder", make_encoder(o, s, o.latent_dim));
  decoder_ = register_module("decoder", make_decoder(o, s, o.latent_dim));
  buffer_ = torch::zeros({nae_.buffer_size, o.latent_dim});
}

torch::Tensor NormalizedAE::encode(const torch::Tensor& x) { return to_sphere(encoder_->forward(x)); }

torch::Tensor NormalizedAE::energy(const torch::Tensor& x) { return (decode(encode(x)) - x).pow(2).flatten(1).mean(1); }

LossTerms NormalizedAE::loss(const torch::Tensor& x) {
  auto e = energy(x).mean();
  return {e, {{"loss", e.detach()}, {"recon", e.detach()}, {"mse", e.detach()}}};
}

std::map<std::string, torch::Tensor> NormalizedAE::scores(const torch::Tensor& x, torch::Tensor* latents) {
  auto s = AutoEncoder::scores(x, latents);
  s["energy"] = s.at("recon_mse");  // the same quantity, under the name the NAE gives it
  s.erase("latent_norm");           // 1 for every code on the sphere: no information
  return s;
}

torch::Tensor NormalizedAE::sample_latents(int64_t n) {
  auto device = parameters().front().device();
  return to_sphere(torch::randn({n, latent_dim()}, torch::TensorOptions().device(device)));
}

std::vector<pae::nn::Phase> NormalizedAE::phases(int64_t epochs) const {
  return {{"ae", epochs, -1}, {"nae", nae_.nae_epochs, 0, nae_.nae_batches}};
}

std::vector<std::pair<std::string, std::vector<torch::Tensor>>> NormalizedAE::parameter_groups() {
  return {{"ae", parameters()}, {"nae", parameters()}};
}

torch::Tensor NormalizedAE::encoder_l2_term() {
  auto sq = torch::zeros({}, parameters().front().options());
  for (const auto& p : encoder_->parameters()) sq = sq + p.pow(2).sum();
  return nae_.encoder_l2 * sq;
}

torch::Tensor NormalizedAE::sample_negatives(int64_t n, inference::LangevinStats* z_stats,
                                             inference::LangevinStats* x_stats) {
  const auto& o = nae_;
  const bool was_training = is_training();
  eval();
  // Everything random that is not the chains' noise comes from the global generator, here.
  auto z0 = sample_latents(n);
  if (buffer_count_ > 0) {
    const auto replay = torch::rand({n}) < o.replay_ratio;
    const auto pick = torch::randint(0, buffer_count_, {n}, torch::kInt64);
    z0 = torch::where(replay.unsqueeze(1).to(z0.device()), buffer_.index_select(0, pick).to(z0.device()), z0);
  }
  // The chains run in `chain_groups` independent groups, each with its own generator seeded from
  // the global one: on the CPU the groups run on threads of one intra-op thread each (small
  // convolutions use a second core poorly; independent chains use it fully), and the numbers do
  // not depend on how many threads there are.
  const int64_t groups = std::max<int64_t>(1, std::min(o.chain_groups, n));
  const auto seeds = torch::randint(0, int64_t(1) << 62, {groups}, torch::kInt64);
  inference::LangevinOptions zo;
  zo.steps = o.z_steps;
  zo.step_size = o.z_step_size;
  zo.noise = o.z_noise;
  zo.temperature = o.temperature;
  zo.sphere = true;
  inference::LangevinOptions xo;
  xo.steps = o.x_steps;
  xo.step_size = o.x_step_size;
  xo.noise = o.x_noise;
  xo.anneal_noise = true;
  xo.temperature = o.temperature;
  xo.grad_clip = o.x_grad_clip;
  xo.clip_rows = o.x_grad_clip_per == "row";
  xo.clamp = true;
  struct Group {
    torch::Tensor z, x;
    inference::LangevinStats zs, xs;
  };
  std::vector<Group> out(static_cast<size_t>(groups));
  auto run_group = [&](int64_t g) {
    const int64_t lo = n * g / groups, hi = n * (g + 1) / groups;
    auto gz = zo, gx = xo;
    gz.generator = gx.generator = at::detail::createCPUGenerator(uint64_t(seeds[g].item<int64_t>()));
    auto& r = out[static_cast<size_t>(g)];
    r.z = inference::langevin([&](const torch::Tensor& zz) { return energy(decode(zz)); }, z0.slice(0, lo, hi), gz,
                              &r.zs);
    torch::Tensor x0;
    {
      torch::NoGradGuard no_grad;
      x0 = decode(r.z).clamp(0, 1);
    }
    r.x = inference::langevin([&](const torch::Tensor& xx) { return energy(xx); }, x0, gx, &r.xs);
  };
  const int64_t threads = z0.device().is_cpu() ? std::min<int64_t>(groups, at::get_num_threads()) : 1;
  if (threads <= 1) {
    for (int64_t g = 0; g < groups; ++g) run_group(g);
  } else {
    const int intra = at::get_num_threads();
    at::set_num_threads(1);  // threads started below take one intra-op thread each
    std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
    std::vector<std::thread> pool;
    for (int64_t t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        try {
          for (int64_t g = t; g < groups; g += threads) run_group(g);
        } catch (...) {
          errors[static_cast<size_t>(t)] = std::current_exception();
        }
      });
    }
    for (auto& th : pool) th.join();
    at::set_num_threads(intra);
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
  }
  std::vector<torch::Tensor> zs, xs;
  inference::LangevinStats zsum, xsum;
  auto add = [&](inference::LangevinStats& s, const inference::LangevinStats& g, double w) {
    s.energy_start += w * g.energy_start;
    s.energy_end += w * g.energy_end;
    s.grad_norm += w * g.grad_norm;
    s.clipped += w * g.clipped;
  };
  for (const auto& r : out) {
    zs.push_back(r.z);
    xs.push_back(r.x);
    const double w = double(r.z.size(0)) / double(n);
    add(zsum, r.zs, w);
    add(xsum, r.xs, w);
  }
  if (z_stats) *z_stats = zsum;
  if (x_stats) *x_stats = xsum;
  // Ring buffer of latent chain ends.
  const auto ends = torch::cat(zs).to(torch::kCPU);
  for (int64_t i = 0; i < n; ++i) {
    buffer_[buffer_head_].copy_(ends[std::min<int64_t>(i, ends.size(0) - 1)]);
    buffer_head_ = (buffer_head_ + 1) % buffer_.size(0);
    buffer_count_ = std::min<int64_t>(buffer_count_ + 1, buffer_.size(0));
  }
  if (was_training) train();
  return torch::cat(xs);
}

void NormalizedAE::train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) {
  const auto& x = batch.x;
  if (ctx.phase() == "ae") {
    auto e = energy(x).mean();
    ctx.step("ae", e + encoder_l2_term());
    ctx.log("loss", e);
    return;
  }
  inference::LangevinStats zs, xs;
  const auto neg = sample_negatives(x.size(0), &zs, &xs);
  last_negatives_ = neg.to(torch::kCPU);
  const auto pos_e = energy(x), neg_e = energy(neg);
  const auto pos = pos_e.mean(), negm = neg_e.mean();
  auto loss = (pos - negm) / nae_.temperature + nae_.gamma * neg_e.pow(2).mean() + encoder_l2_term();
  ctx.step("nae", loss);
  ctx.log("loss", pos);
  ctx.log("pos_energy", pos);
  ctx.log("neg_energy", negm);
  ctx.log("objective", loss);
  const auto scalar = [&](double v) { return torch::tensor(v, torch::kFloat64); };
  ctx.log("z_chain_energy_start", scalar(zs.energy_start));
  ctx.log("z_chain_energy_end", scalar(zs.energy_end));
  ctx.log("x_chain_energy_end", scalar(xs.energy_end));
  ctx.log("x_chain_clipped", scalar(xs.clipped));
}

void NormalizedAE::save_state(torch::serialize::OutputArchive& archive) {
  archive.write("buffer", buffer_);
  archive.write("buffer_count", torch::tensor(buffer_count_, torch::kInt64));
  archive.write("buffer_head", torch::tensor(buffer_head_, torch::kInt64));
}

void NormalizedAE::load_state(torch::serialize::InputArchive& archive) {
  torch::Tensor b, count, head;
  archive.read("buffer", b);
  archive.read("buffer_count", count);
  archive.read("buffer_head", head);
  require(b.sizes() == buffer_.sizes(), "checkpoint: the replay buffer has shape " + std::to_string(b.size(0)) + "x" +
                                            std::to_string(b.size(1)) + ", the config asks for " +
                                            std::to_string(buffer_.size(0)) + "x" + std::to_string(buffer_.size(1)));
  buffer_ = b.to(torch::kCPU).clone();
  buffer_count_ = count.item<int64_t>();
  buffer_head_ = head.item<int64_t>();
}

}  // namespace pae::models
