#include "pae/models/dnf_family.h"

#include <torch/torch.h>

#include "pae/nn/sample_noise.h"
#include "pae/util/error.h"

namespace pae::models {

void DnfFamilyOptions::visit(OptionVisitor& v, const ModelOptions& /*model*/) {
  v("sigma", sigma, positive());
  v("recon_weight", recon_weight, at_least(0));
  v("off_manifold_weight", off_manifold_weight, at_least(0));
  v("outer_layers", outer_layers, positive());
  v("inner_layers", inner_layers, positive());
  v("flow_hidden", flow_hidden, in_range(1, 1 << 16));
  v("flow_blocks", flow_blocks, positive());
  v("bins", bins, at_least(2));
  v("tail_bound", tail_bound, positive());
  v("flow_seed", flow_seed, any_value());
}

flows::DnfOptions DnfFamilyOptions::dnf_options(int64_t data_dim, int64_t manifold_dim) const {
  flows::DnfOptions o;
  o.data_dim = data_dim;
  o.manifold_dim = manifold_dim;
  o.sigma = sigma;
  o.recon_weight = recon_weight;
  o.off_manifold_weight = off_manifold_weight;
  o.outer.layers = outer_layers;
  o.outer.hidden = flow_hidden;
  o.outer.hidden_layers = flow_blocks;
  o.outer.conditioner = "resnet";
  o.outer.bins = bins;
  o.outer.tail_bound = tail_bound;
  o.outer.permutation = "lu";
  o.outer.seed = flow_seed;
  o.inner = o.outer;
  o.inner.layers = inner_layers;
  return o;
}

namespace {

int64_t flat_dim(const ImageShape& s) { return s.channels * s.height * s.width; }

}  // namespace

DenoisingFlowAE::DenoisingFlowAE(const ModelOptions& o, const ImageShape& s) : AutoEncoder(o, s) {
  const int64_t data_dim = flat_dim(s);
  require(o.latent_dim >= 1 && o.latent_dim < data_dim,
          "model.latent_dim " + std::to_string(o.latent_dim) +
              " for type dnf: the manifold's dimension d must lie in [1, " + std::to_string(data_dim) +
              ") (the data's dimension, " + s.str() + " flattened)");
  dnf_ = register_module(
      "dnf", std::make_shared<flows::DenoisingFlow>(o.family<DnfFamilyOptions>().dnf_options(data_dim, o.latent_dim)));
}

torch::Tensor DenoisingFlowAE::encode(const torch::Tensor& x) { return dnf_->encode(x.flatten(1)); }

torch::Tensor DenoisingFlowAE::decode(const torch::Tensor& z) {
  return dnf_->decode(z).view({z.size(0), shape_.channels, shape_.height, shape_.width});
}

torch::Tensor DenoisingFlowAE::decode_logits(const torch::Tensor& /*z*/) {
  throw Error("model.type dnf decodes to data (decode), not to logits");
}

LossTerms DenoisingFlowAE::loss(const torch::Tensor& x) {
  const auto flat = x.flatten(1);
  const auto l = dnf_->loss(flat, torch::zeros_like(flat));
  return {l.total,
          {{"loss", l.total.detach()},
           {"nll", l.nll.detach()},
           {"recon", l.recon.detach()},
           {"mse", l.recon.detach()},
           {"off_manifold", l.off_manifold.detach()}}};
}

std::map<std::string, torch::Tensor> DenoisingFlowAE::scores(const torch::Tensor& x, torch::Tensor* latents) {
  auto s = AutoEncoder::scores(x, latents);
  s["nll"] = -log_density(x);
  return s;
}

torch::Tensor DenoisingFlowAE::log_density(const torch::Tensor& x) { return dnf_->log_prob(x.flatten(1)); }

std::vector<std::pair<std::string, std::vector<torch::Tensor>>> DenoisingFlowAE::parameter_groups() {
  return dnf_->parameter_groups();
}

void DenoisingFlowAE::train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) {
  dnf_->train_step({batch.x.flatten(1), batch.y}, ctx);
}

std::string DenoisingFlowAE::signature() const {
  return dnf_->signature() + "/" + std::to_string(shape_.channels) + "x" + std::to_string(shape_.height) + "x" +
         std::to_string(shape_.width);
}

}  // namespace pae::models
