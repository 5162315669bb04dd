// Posterior inference in a generator's latent space: the MAP latent of a partly observed or noisy
// image and a Laplace approximation around it (the PAE's inpainting and denoising). Generic over
// the generator u -> image (for the PAE: decoder(flow^-1(u)), u in the flow's Gaussian space), so
// this layer knows no model.
//
// Model: u ~ N(0, I); x_i | u ~ N(g(u)_i, sigma_i^2) for observed pixels i (or, with the
// Bernoulli likelihood, x_i | u ~ Bernoulli(g(u)_i), the likelihood of BCE-trained decoders).
// Negative log posterior (constants dropped): 0.5 sum_obs ((x_i - g(u)_i) / sigma_i)^2 + 0.5 |u|^2,
// or -sum_obs (x_i log g_i + (1 - x_i) log(1 - g_i)) + 0.5 |u|^2.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

namespace pae::inference {

/// u:[B,d] -> images:[B,...] (differentiable in u, twice for gauss_newton).
using Generator = std::function<at::Tensor(const at::Tensor&)>;

enum class Likelihood { gaussian, bernoulli };

/// "gaussian" | "bernoulli"; otherwise an error naming `what` (a flag or key).
Likelihood parse_likelihood(const std::string& name, const std::string& what);

/// Per image [B]. x:[B,...]; observed: bool or 0/1 like x; sigma broadcastable to x (> 0; not
/// used by the Bernoulli likelihood).
at::Tensor neg_log_posterior(const Generator& g, const at::Tensor& u, const at::Tensor& x, const at::Tensor& observed,
                             const at::Tensor& sigma, Likelihood likelihood = Likelihood::gaussian);

struct MapOptions {
  int64_t steps = 300;     ///< Adam steps per restart
  double lr = 0.05;        ///< first learning rate, decayed exponentially to lr_final
  double lr_final = 1e-3;  ///< last learning rate
  int64_t restarts = 3;    ///< restart 0 starts at u = 0 (the prior's mode), the others at N(0, init_std^2 I)
  double init_std = 1.0;
  uint64_t seed = 0;  ///< the restarts' starting points
  Likelihood likelihood = Likelihood::gaussian;
};

struct MapResult {
  at::Tensor u;          ///< [B,d] the best latent over all restarts and steps
  at::Tensor objective;  ///< [B] its negative log posterior
  at::Tensor starts;     ///< [R,B] each restart's objective at its starting point
  at::Tensor ends;       ///< [R,B] each restart's best objective (never above its start)
};

/// MAP by batched Adam over every image and restart at once (Adam acts per coordinate, so the
/// images do not interact); each restart keeps its best iterate.
MapResult map_estimate(const Generator& g, int64_t dim, const at::Tensor& x, const at::Tensor& observed,
                       const at::Tensor& sigma, const MapOptions& options);

/// The Gauss-Newton approximation of the negative log posterior's Hessian at u: [B,d,d] =
/// J^T diag(observed / sigma^2) J + I, with J = dg/du per image (first derivatives only: d
/// double-backward passes through one forward). For the Bernoulli likelihood pass
/// sigma = bernoulli_sigma(g(u)): its Fisher information per pixel is 1 / (p (1 - p)).
at::Tensor gauss_newton(const Generator& g, const at::Tensor& u, const at::Tensor& observed, const at::Tensor& sigma);

/// sqrt(p (1 - p)), floored at 1e-3: the per-pixel sigma that makes gauss_newton the Fisher
/// (Gauss-Newton) matrix of the Bernoulli likelihood.
at::Tensor bernoulli_sigma(const at::Tensor& p);

/// n samples per image from N(u, H^-1): [B,n,d] (Cholesky of H; CPU generator from seed).
at::Tensor laplace_samples(const at::Tensor& u, const at::Tensor& hessian, int64_t n, uint64_t seed);

struct ChainOptions {
  int64_t steps = 0;   ///< Metropolis-adjusted Langevin steps per chain (0: the Laplace samples as they are)
  double step = 0.01;  ///< step epsilon in the Laplace-whitened coordinates (noise sqrt(2 epsilon))
  uint64_t seed = 0;
};

struct ChainResult {
  at::Tensor u;         ///< [B,n,d] the chains' last states
  double accepted = 1;  ///< fraction of proposals accepted
};

/// Refines posterior samples by a short chain of the library's Langevin sampler (Metropolis-
/// adjusted, so exact for any step) per sample, started at `start` [B,n,d] (the Laplace samples)
/// on the exact negative log posterior. The chains run in coordinates whitened by the Laplace
/// fit (u = u_map + L^-T v with H = L L^T), where the posterior is close to N(0, I) and one step
/// size suits every image; what the Gaussian fit misses (skew, curvature) the chain corrects.
ChainResult posterior_chain(const Generator& g, const at::Tensor& start, const at::Tensor& u_map,
                            const at::Tensor& hessian, const at::Tensor& x, const at::Tensor& observed,
                            const at::Tensor& sigma, Likelihood likelihood, const ChainOptions& options);

}  // namespace pae::inference
