#include "pae/models/autoencoder.h"

#include <torch/torch.h>

#include <cmath>

#include "pae/models/aae.h"
#include "pae/models/dnf_family.h"
#include "pae/models/nae.h"
#include "pae/nn/sample_noise.h"
#include "pae/util/error.h"

namespace pae::models {

namespace F = torch::nn::functional;

std::map<std::string, torch::Tensor> AutoEncoder::scores(const torch::Tensor& x, torch::Tensor* latents) {
  auto z = encode(x);
  if (latents) *latents = z;
  auto recon = decode(z);
  return {{"recon_mse", (recon - x).pow(2).flatten(1).mean(1)}, {"latent_norm", z.norm(2, 1)}};
}

void AutoEncoder::train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) {
  LossTerms out = loss(batch.x);
  ctx.step("ae", out.loss, out.terms);
  for (const auto& [name, value] : out.terms) ctx.log(name, value);
}

pae::nn::Terms AutoEncoder::evaluate(const torch::Tensor& images, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  eval();
  const auto device = parameters().front().device();
  std::map<std::string, torch::Tensor> sums;
  int64_t count = 0;
  for (int64_t i = 0; i < images.size(0); i += batch_size) {
    const auto x = images.slice(0, i, std::min(i + batch_size, images.size(0))).to(device);
    for (const auto& [name, value] : loss(x).terms) {
      auto it = sums.find(name);
      if (it == sums.end()) it = sums.emplace(name, torch::zeros({}, value.options().dtype(torch::kFloat64))).first;
      it->second += value.to(torch::kFloat64) * double(x.size(0));
    }
    count += x.size(0);
  }
  pae::nn::Terms out;
  for (const auto& [name, sum] : sums) out[name] = sum.item<double>() / double(std::max<int64_t>(count, 1));
  return out;
}

std::string AutoEncoder::signature() const {
  const bool networks = AutoEncoderRegistry::instance().get(options_.type).uses_networks;
  return options_.type + (networks ? "/" + options_.arch : std::string()) + "/z" + std::to_string(options_.latent_dim) +
         "/" + std::to_string(shape_.channels) + "x" + std::to_string(shape_.height) + "x" +
         std::to_string(shape_.width);
}

torch::Tensor AutoEncoder::sample_latents(int64_t n) {
  auto device = parameters().front().device();
  return torch::randn({n, latent_dim()}, torch::TensorOptions().device(device));
}

torch::Tensor recon_nll(const std::string& kind, const torch::Tensor& logits, const torch::Tensor& x, double sigma) {
  if (kind == "bce" || kind == "bernoulli") {
    return F::binary_cross_entropy_with_logits(logits, x,
                                               F::BinaryCrossEntropyWithLogitsFuncOptions().reduction(torch::kNone))
        .flatten(1)
        .sum(1);
  }
  const auto d = static_cast<double>(x[0].numel());
  auto sq = (torch::sigmoid(logits) - x).pow(2).flatten(1).sum(1);
  if (kind == "gaussian") return sq / (2 * sigma * sigma) + 0.5 * d * std::log(2 * M_PI * sigma * sigma);
  return sq / d;  // mse: per pixel
}

namespace {

/// Deterministic auto-encoder (MSE or Bernoulli/BCE reconstruction).
class PlainAE : public AutoEncoder {
 public:
  PlainAE(const ModelOptions& o, const ImageShape& s)
      : AutoEncoder(o, s), identity_output_(o.family<AeOptions>().output == "identity") {
    require(o.recon_loss == "mse" || o.recon_loss == "bce" || o.recon_loss == "bernoulli",
            "model.recon_loss '" + o.recon_loss + "' for type ae: expected mse or bce");
    require(!identity_output_ || o.recon_loss == "mse",
            "model.output identity for type ae: the reconstruction loss must be mse (bce needs the sigmoid)");
    encoder_ = register_module("encoder", make_encoder(o, s, o.latent_dim));
    decoder_ = register_module("decoder", make_decoder(o, s, o.latent_dim));
  }
  torch::Tensor encode(const torch::Tensor& x) override { return encoder_->forward(x); }
  torch::Tensor decode_logits(const torch::Tensor& z) override { return decoder_->forward(z); }
  torch::Tensor decode(const torch::Tensor& z) override {
    return identity_output_ ? decode_logits(z) : torch::sigmoid(decode_logits(z));
  }

  LossTerms loss(const torch::Tensor& x) override {
    torch::Tensor mse;
    torch::Tensor total;
    if (options_.recon_loss == "mse") {
      mse = F::mse_loss(decode(encode(x)), x);
      total = mse;
      return {total, {{"loss", total.detach()}, {"mse", mse.detach()}}};
    }
    const auto logits = decode_logits(encode(x));
    total = recon_nll("bce", logits, x, 0).mean();
    mse = F::mse_loss(torch::sigmoid(logits), x);
    return {total, {{"loss", total.detach()}, {"bce", total.detach()}, {"mse", mse.detach()}}};
  }

 private:
  bool identity_output_;
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
};

/// β-VAE (Kingma & Welling 2014; Higgins et al. 2017): Gaussian posterior, analytic KL to
/// N(0, I), Bernoulli or fixed-sigma Gaussian likelihood. Losses are nats per image.
class BetaVAE : public AutoEncoder {
 public:
  BetaVAE(const ModelOptions& o, const ImageShape& s) : AutoEncoder(o, s) {
    require(o.recon_loss != "mse", "model.recon_loss 'mse' for type vae: expected bernoulli (bce) or gaussian");
    encoder_ = register_module("encoder", make_encoder(o, s, 2 * o.latent_dim));
    decoder_ = register_module("decoder", make_decoder(o, s, o.latent_dim));
  }
  torch::Tensor encode(const torch::Tensor& x) override { return encoder_->forward(x).chunk(2, 1)[0]; }
  torch::Tensor decode_logits(const torch::Tensor& z) override { return decoder_->forward(z); }

  /// Per-image negative ELBO terms: (nll, kl), each [B], from one posterior sample.
  std::pair<torch::Tensor, torch::Tensor> elbo_terms(const torch::Tensor& x, torch::Tensor* logits_out = nullptr) {
    auto h = encoder_->forward(x).chunk(2, 1);
    auto mu = h[0], logvar = h[1];
    auto z = mu + pae::nn::sample_randn_like(mu) * torch::exp(0.5 * logvar);
    auto logits = decode_logits(z);
    auto nll = recon_nll(options_.recon_loss, logits, x, options_.family<VaeOptions>().sigma);
    auto kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1);
    if (logits_out) *logits_out = logits;
    return {nll, kl};
  }

  LossTerms loss(const torch::Tensor& x) override {
    torch::Tensor logits;
    auto [nll, kl] = elbo_terms(x, &logits);
    auto nll_m = nll.mean(), kl_m = kl.mean();
    auto total = nll_m + options_.family<VaeOptions>().beta * kl_m;
    LossTerms out{total,
                  {{"loss", total.detach()},
                   {"nll", nll_m.detach()},
                   {"kl", kl_m.detach()},
                   {"neg_elbo", (nll_m + kl_m).detach()}}};
    // The pixel MSE is a report, not part of the objective: computed in evaluation only,
    // where it costs nothing that matters (it is ~5% of a training step of the MLP VAE).
    if (!is_training()) out.terms.emplace_back("mse", F::mse_loss(torch::sigmoid(logits), x).detach());
    return out;
  }

  std::map<std::string, torch::Tensor> scores(const torch::Tensor& x, torch::Tensor* latents) override {
    auto s = AutoEncoder::scores(x, latents);
    auto [nll, kl] = elbo_terms(x);
    s["neg_elbo"] = nll + kl;
    return s;
  }

 private:
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
};

void register_builtin_models(AutoEncoderRegistry& r) {
  r.add("ae", family_with_options<AeOptions>(
                  [](const ModelOptions& o, const ImageShape& s) { return std::make_shared<PlainAE>(o, s); }));
  r.add("vae", family_with_options<VaeOptions>(
                   [](const ModelOptions& o, const ImageShape& s) { return std::make_shared<BetaVAE>(o, s); }));
  r.add("aae", family_with_options<AaeOptions>(
                   [](const ModelOptions& o, const ImageShape& s) { return std::make_shared<AdversarialAE>(o, s); }));
  r.add("nae", family_with_options<NaeOptions>(
                   [](const ModelOptions& o, const ImageShape& s) { return std::make_shared<NormalizedAE>(o, s); }));
  r.add("dnf", family_with_options<DnfFamilyOptions>(
                   [](const ModelOptions& o, const ImageShape& s) { return std::make_shared<DenoisingFlowAE>(o, s); },
                   /*uses_networks=*/false));
}

}  // namespace

AutoEncoderRegistry& AutoEncoderRegistry::instance() {
  static AutoEncoderRegistry* registry = [] {
    auto* r = new AutoEncoderRegistry();
    register_builtin_models(*r);
    return r;
  }();
  return *registry;
}

std::shared_ptr<AutoEncoder> build_autoencoder(const ModelOptions& options, const ImageShape& shape) {
  require(shape.channels > 0 && shape.height > 0 && shape.width > 0,
          "cannot build a model for image shape " + shape.str());
  return AutoEncoderRegistry::instance().create(options, shape);
}

void AeOptions::visit(OptionVisitor& v, const ModelOptions& /*model*/) {
  v("output", output, one_of({"sigmoid", "identity"}));
}

void VaeOptions::visit(OptionVisitor& v, const ModelOptions& model) {
  v("beta", beta, at_least(0));
  v("sigma", sigma, positive().applies_if(model.recon_loss == "gaussian", "it applies to recon_loss gaussian"));
}

}  // namespace pae::models

namespace pae {

void ModelOptions::visit(OptionVisitor& v) {
  const auto& registry = models::AutoEncoderRegistry::instance();
  auto types = registry.names();
  types.push_back("classifier");
  v("type", type, one_of(types));
  if (type == "classifier") return;  // a fixed architecture: no other key applies
  const auto& family = registry.get(type);
  const std::string no_networks = "model.type " + type + " has no encoder network";
  const auto networks = [&](const Spec& spec) { return spec.applies_if(family.uses_networks, no_networks); };
  const auto mlp = [&](const Spec& spec) { return networks(spec).applies_if(arch == "mlp", "it applies to arch mlp"); };
  const auto conv = [&](const Spec& spec) {
    return networks(spec).applies_if(arch == "conv", "it applies to arch conv");
  };
  // Upper limits: sizes beyond them end in an allocation failure far from the key that caused it.
  constexpr double kMaxWidth = 1 << 16;
  v("latent_dim", latent_dim, in_range(1, kMaxWidth));
  v("arch", arch, networks(one_of({"mlp", "conv"})));
  v("hidden", hidden, mlp(in_range(1, kMaxWidth)));
  v("channels", channels, conv(in_range(1, kMaxWidth).not_empty()));
  v("kernel", kernel, conv(in_range(2, 15)));
  v("batch_norm", batch_norm, conv(any_value()));
  v("activation", activation, networks(one_of({"relu", "leaky_relu", "elu", "silu"})));
  v("recon_loss", recon_loss, networks(one_of({"mse", "bce", "bernoulli", "gaussian"})));
  v("dropout", dropout, mlp(in_half_open(0, 1)));
  family.visit_options(*this, v);
}

}  // namespace pae
