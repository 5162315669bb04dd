#include "pae/models/aae.h"

#include <torch/torch.h>

#include <cmath>

#include "pae/nn/sample_noise.h"
#include "pae/util/error.h"

namespace pae::models {

namespace F = torch::nn::functional;

void AaeOptions::visit(OptionVisitor& v, const ModelOptions& /*model*/) {
  const auto mixture = [&](const Spec& spec) {
    return spec.applies_if(prior == "mixture", "it applies to prior mixture");
  };
  v("prior", prior, one_of({"gaussian", "mixture"}));
  v("prior_std", prior_std, positive());
  v("prior_components", prior_components, mixture(positive()));
  v("prior_layout", prior_layout, mixture(one_of({"circle", "random"})));
  v("prior_radius", prior_radius, mixture(at_least(0)));
  v("conditional", conditional, any_value());
  v("disc_hidden", disc_hidden, positive());
}

AdversarialAE::AdversarialAE(const ModelOptions& o, const ImageShape& s)
    : AutoEncoder(o, s), aae_(o.family<AaeOptions>()) {
  const auto& a = aae_;
  require(o.recon_loss == "mse" || o.recon_loss == "bce" || o.recon_loss == "bernoulli",
          "model.recon_loss '" + o.recon_loss + "' for type aae: expected mse or bce");
  require(!a.conditional || a.prior == "mixture",
          "model.conditional: the label-conditioned AAE matches label y to mixture component y; set model.prior: "
          "mixture with prior_components = the number of classes");
  encoder_ = register_module("encoder", make_encoder(o, s, o.latent_dim));
  decoder_ = register_module("decoder", make_decoder(o, s, o.latent_dim));
  const int64_t k = a.prior == "mixture" ? a.prior_components : 1;
  disc_ = register_module("disc",
                          make_mlp(o.latent_dim + (a.conditional ? k : 0), a.disc_hidden, 1, "leaky_relu", o.dropout));
  // Mixture centres: a fixed part of the model (saved with it), drawn from a generator of
  // their own so that the layout does not depend on the training seed's stream.
  auto centres = torch::zeros({k, o.latent_dim});
  if (a.prior == "mixture") {
    if (a.prior_layout == "circle") {
      require(o.latent_dim >= 2, "model.prior_layout circle needs latent_dim >= 2");
      for (int64_t i = 0; i < k; ++i) {
        const double angle = 2 * M_PI * double(i) / double(k);
        centres[i][0] = a.prior_radius * std::cos(angle);
        centres[i][1] = a.prior_radius * std::sin(angle);
      }
    } else {
      auto gen = at::detail::createCPUGenerator(20151118);
      centres = at::normal(0.0, 1.0, {k, o.latent_dim}, gen) * a.prior_radius;
    }
  }
  centres_ = register_buffer("centres", centres);
}

std::vector<std::pair<std::string, std::vector<torch::Tensor>>> AdversarialAE::parameter_groups() {
  auto ae = encoder_->parameters();
  for (auto& p : decoder_->parameters()) ae.push_back(p);
  return {{"ae", ae}, {"disc", disc_->parameters()}, {"gen", encoder_->parameters()}};
}

torch::Tensor AdversarialAE::sample_latents_of(const torch::Tensor& component) {
  const auto device = centres_.device();
  auto mean = centres_.index_select(0, component.to(device));
  return mean + aae_.prior_std * pae::nn::sample_randn_like(mean);
}

torch::Tensor AdversarialAE::sample_latents(int64_t n) {
  const auto k = centres_.size(0);
  auto component = k > 1 ? pae::nn::sample_randint(k, n) : torch::zeros({n}, torch::kInt64);
  return sample_latents_of(component);
}

torch::Tensor AdversarialAE::discriminate(const torch::Tensor& z, const torch::Tensor& labels) {
  if (!aae_.conditional) return disc_->forward(z).squeeze(1);
  require(labels.defined(), "model.conditional: the discriminator needs labels, and this dataset has none");
  const auto k = centres_.size(0);
  const auto bad = (labels < 0).logical_or(labels >= k);
  require(!bad.any().item<bool>(),
          "model.conditional: labels must lie in [0, prior_components = " + std::to_string(k) + ")");
  return disc_->forward(torch::cat({z, F::one_hot(labels.to(z.device()), k).to(z.dtype())}, 1)).squeeze(1);
}

LossTerms AdversarialAE::loss(const torch::Tensor& x) {
  auto logits = decode_logits(encode(x));
  auto recon = recon_nll(options_.recon_loss, logits, x, 0).mean();
  auto mse = F::mse_loss(torch::sigmoid(logits), x);
  return {recon, {{"loss", recon.detach()}, {"recon", recon.detach()}, {"mse", mse.detach()}}};
}

void AdversarialAE::train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) {
  const auto& x = batch.x;
  const auto& y = batch.y;
  // 1. Reconstruction: encoder and decoder.
  auto terms = loss(x);
  ctx.step("ae", terms.loss, terms.terms);
  for (const auto& [name, value] : terms.terms) ctx.log(name, value);
  // 2. Discriminator: prior samples are real, the encoder's codes fake (no gradient to it).
  const auto fake = encode(x).detach();
  const auto real = aae_.conditional ? sample_latents_of(y) : sample_latents(x.size(0));
  const auto d_real = discriminate(real, y), d_fake = discriminate(fake, y);
  auto disc_loss = 0.5 * (F::binary_cross_entropy_with_logits(d_real, torch::ones_like(d_real)) +
                          F::binary_cross_entropy_with_logits(d_fake, torch::zeros_like(d_fake)));
  ctx.step("disc", disc_loss);
  ctx.log("disc_loss", disc_loss);
  ctx.log("disc_accuracy", 0.5 * ((d_real > 0).to(torch::kFloat).mean() + (d_fake < 0).to(torch::kFloat).mean()));
  // 3. Generator: the encoder makes its codes look real. Its backward also leaves gradients in
  // the discriminator, which that group's next step clears before using its own.
  const auto d_gen = discriminate(encode(x), y);
  auto gen_loss = F::binary_cross_entropy_with_logits(d_gen, torch::ones_like(d_gen));
  ctx.step("gen", gen_loss);
  ctx.log("gen_loss", gen_loss);
}

std::map<std::string, torch::Tensor> AdversarialAE::scores(const torch::Tensor& x, torch::Tensor* latents) {
  torch::Tensor z;
  auto s = AutoEncoder::scores(x, &z);
  if (latents) *latents = z;
  // Unconditional scores need no label: with model.conditional the code is scored against
  // the best-matching component's label.
  if (!aae_.conditional) {
    s["neg_disc_logit"] = -discriminate(z);
  } else {
    const auto k = centres_.size(0);
    std::vector<torch::Tensor> per_label;
    for (int64_t c = 0; c < k; ++c) per_label.push_back(discriminate(z, torch::full({z.size(0)}, c, torch::kInt64)));
    s["neg_disc_logit"] = -std::get<0>(torch::stack(per_label, 1).max(1));
  }
  return s;
}

}  // namespace pae::models
