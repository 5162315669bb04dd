// Posterior inference in a generator's latent space: MAP, Gauss-Newton and Laplace against the
// closed form of a linear-Gaussian model, and the Gauss-Newton matrix against autograd.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pae/inference/posterior.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;

namespace {

struct LinearGaussian {
  at::Tensor a, c, x, observed, sigma;  // a:[P,d], c:[P]; images [B,1,2,5]
  inference::Generator g() const {
    return [a = a, c = c](const at::Tensor& u) { return (u.matmul(a.t()) + c).view({u.size(0), 1, 2, 5}); };
  }
};

/// Drawn on the CPU, then moved to `device`: the same model on every device.
LinearGaussian linear_gaussian(int64_t b, c10::Device device = c10::Device(c10::kCPU)) {
  torch::manual_seed(5);
  const auto f64 = torch::kFloat64;
  LinearGaussian m;
  m.a = torch::randn({10, 3}, f64).to(device);
  m.c = (torch::randn({10}, f64) * 0.1).to(device);
  m.x = torch::rand({b, 1, 2, 5}, f64).to(device);
  m.observed = (torch::rand({b, 1, 2, 5}) > 0.3).to(device);
  m.sigma = (torch::rand({1, 2, 5}, f64) * 0.7 + 0.3).to(device);
  return m;
}

/// The MAP of a linear-Gaussian model, converged tightly.
inference::MapResult converged_map(const LinearGaussian& m) {
  inference::MapOptions o;
  o.steps = 1500;
  o.lr = 0.1;
  o.lr_final = 1e-4;
  return inference::map_estimate(m.g(), 3, m.x, m.observed, m.sigma, o);
}

}  // namespace

TEST(Posterior, LinearGaussianMapGaussNewtonAndLaplaceMatchTheClosedForm) {
  PAE_DEVICE_UNDER_TEST(device);
  const auto m = linear_gaussian(4, device);
  const auto map = converged_map(m);
  const auto h = inference::gauss_newton(m.g(), map.u, m.observed, m.sigma);
  for (int64_t i = 0; i < 4; ++i) {
    const auto w = (m.observed[i].to(torch::kFloat64) / m.sigma.pow(2)).flatten();
    const auto precision = m.a.t().matmul(w.unsqueeze(1) * m.a) + torch::eye(3, m.a.options());
    const auto mean = torch::linalg_solve(precision, m.a.t().matmul(w * (m.x[i].flatten() - m.c)));
    EXPECT_LT((map.u[i] - mean).abs().max().item<double>(), 1e-4) << i;
    EXPECT_LT((h[i] - precision).abs().max().item<double>(), 1e-10) << i;
  }
  // Laplace samples: mean u, covariance H^-1 (20,000 samples: a few percent).
  const auto s = inference::laplace_samples(map.u, h, 20000, 3);
  EXPECT_EQ(map.u.device(), device);
  ASSERT_EQ(s.sizes(), (std::vector<int64_t>{4, 20000, 3}));
  const auto centred = s[1] - s[1].mean(0);
  const auto cov = centred.t().matmul(centred) / 19999.0;
  const auto expected = torch::inverse(h[1]);
  EXPECT_LT((cov - expected).abs().max().item<double>(), 0.05 * expected.abs().max().item<double>());
  EXPECT_LT((s[1].mean(0) - map.u[1]).abs().max().item<double>(), 0.03);
}

TEST(Posterior, GaussNewtonIsJacobianProductOfAutograd) {
  torch::manual_seed(2);
  auto net = torch::nn::Sequential(torch::nn::Linear(3, 8), torch::nn::Tanh(), torch::nn::Linear(8, 6));
  net->to(torch::kFloat64);
  const inference::Generator g = [&](const at::Tensor& u) {
    return torch::sigmoid(net->forward(u)).view({-1, 1, 2, 3});
  };
  const auto u = torch::randn({2, 3}, torch::kFloat64);
  const auto observed = torch::tensor({1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0}, torch::kBool).view({2, 1, 2, 3});
  const auto sigma = torch::full({1, 1, 1}, 0.2, torch::kFloat64);
  const auto h = inference::gauss_newton(g, u, observed, sigma);
  for (int64_t i = 0; i < 2; ++i) {
    // J row by row: one reverse pass per pixel.
    auto ui = u[i].unsqueeze(0).clone().requires_grad_(true);
    const auto y = g(ui).flatten();
    std::vector<at::Tensor> rows;
    for (int64_t p = 0; p < y.size(0); ++p) rows.push_back(torch::autograd::grad({y[p]}, {ui}, {}, true)[0].flatten());
    const auto jac = torch::stack(rows);  // [P,d]
    const auto w = observed[i].flatten().to(torch::kFloat64) / 0.04;
    const auto expected = jac.t().matmul(w.unsqueeze(1) * jac) + torch::eye(3, torch::kFloat64);
    EXPECT_LT((h[i] - expected).abs().max().item<double>(), 1e-10) << i;
  }
}

TEST(Posterior, RestartsNeverEndAboveTheirStartAndTheBestIsKept) {
  torch::manual_seed(7);
  auto net = torch::nn::Sequential(torch::nn::Linear(4, 16), torch::nn::Tanh(), torch::nn::Linear(16, 12));
  const inference::Generator g = [&](const at::Tensor& u) {
    return torch::sigmoid(net->forward(u)).view({-1, 1, 3, 4});
  };
  const auto x = torch::rand({5, 1, 3, 4});
  const auto observed = torch::rand({5, 1, 3, 4}) > 0.5;
  const auto sigma = torch::full({1, 3, 4}, 0.1);
  inference::MapOptions o;
  o.steps = 40;
  o.lr = 1.0;  // large enough that single steps overshoot
  o.restarts = 4;
  o.init_std = 2.0;
  const auto map = inference::map_estimate(g, 4, x, observed, sigma, o);
  ASSERT_EQ(map.starts.sizes(), (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(torch::all(map.ends <= map.starts).item<bool>());
  EXPECT_TRUE(torch::equal(map.objective, std::get<0>(map.ends.min(0))));
  // The returned latent has the returned objective.
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(inference::neg_log_posterior(g, map.u, x, observed, sigma), map.objective, 1e-5, 1e-5));
  // Same seed, same answer.
  EXPECT_TRUE(torch::equal(inference::map_estimate(g, 4, x, observed, sigma, o).u, map.u));
}

TEST(Posterior, ChainsFromAWrongGaussianReachTheClosedFormPosterior) {
  // Start the chains from a Gaussian four times too wide and whiten with that wrong Hessian: the
  // Metropolis-adjusted chains still end at the exact posterior N(mean, precision^-1).
  const auto m = linear_gaussian(2);
  const auto map = converged_map(m);
  const auto h = inference::gauss_newton(m.g(), map.u, m.observed, m.sigma);
  const auto wrong = h / 4;
  const auto start = inference::laplace_samples(map.u, wrong, 6000, 4);
  inference::ChainOptions co;
  co.steps = 200;
  co.step = 0.3;
  co.seed = 9;
  const auto chain = inference::posterior_chain(m.g(), start, map.u, wrong, m.x, m.observed, m.sigma,
                                                inference::Likelihood::gaussian, co);
  ASSERT_EQ(chain.u.sizes(), start.sizes());
  EXPECT_GT(chain.accepted, 0.2);
  for (int64_t i = 0; i < 2; ++i) {
    const auto s = chain.u[i];
    const auto centred = s - s.mean(0);
    const auto cov = centred.t().matmul(centred) / double(s.size(0) - 1);
    const auto expected = torch::inverse(h[i]);
    const double scale = expected.diagonal().max().item<double>();
    EXPECT_LT((cov - expected).abs().max().item<double>(), 0.08 * scale) << i << cov << expected;
    EXPECT_LT((s.mean(0) - map.u[i]).abs().max().item<double>(), 0.05 * std::sqrt(scale)) << i;
    // The start was visibly wrong: its covariance is 4 times the posterior's.
    const auto c0 = start[i] - start[i].mean(0);
    EXPECT_GT((c0.t().matmul(c0) / double(s.size(0) - 1)).diagonal().min().item<double>(),
              2.5 * expected.diagonal().min().item<double>());
  }
  co.steps = 0;  // no chain: the start as it is
  EXPECT_TRUE(torch::equal(inference::posterior_chain(m.g(), start, map.u, wrong, m.x, m.observed, m.sigma,
                                                      inference::Likelihood::gaussian, co)
                               .u,
                           start));
}

TEST(Posterior, BernoulliGaussNewtonIsTheExactHessianOfALogitLinearModel) {
  // g(u) = sigmoid(A u + c): the Bernoulli negative log likelihood's Hessian in u is exactly
  // A^T diag(observed p (1 - p)) A, which gauss_newton returns with sigma = bernoulli_sigma(p).
  torch::manual_seed(4);
  const auto f64 = torch::kFloat64;
  const auto a = torch::randn({6, 3}, f64), c = torch::randn({6}, f64) * 0.3;
  const inference::Generator g = [&](const at::Tensor& u) {
    return torch::sigmoid(u.matmul(a.t()) + c).view({u.size(0), 1, 2, 3});
  };
  const auto x = (torch::rand({2, 1, 2, 3}, f64) > 0.5).to(f64);
  const auto observed = torch::tensor({1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1}, torch::kBool).view({2, 1, 2, 3});
  const auto u = torch::randn({2, 3}, f64);
  const auto h = inference::gauss_newton(g, u, observed, inference::bernoulli_sigma(g(u)));
  for (int64_t i = 0; i < 2; ++i) {
    auto ui = u[i].unsqueeze(0).clone().requires_grad_(true);
    const auto f = inference::neg_log_posterior(g, ui, x[i].unsqueeze(0), observed[i].unsqueeze(0),
                                                torch::ones({1}, f64), inference::Likelihood::bernoulli);
    const auto grad = torch::autograd::grad({f.sum()}, {ui}, {}, true, true)[0].flatten();
    std::vector<at::Tensor> rows;
    for (int64_t k = 0; k < 3; ++k) rows.push_back(torch::autograd::grad({grad[k]}, {ui}, {}, true)[0].flatten());
    const auto expected = torch::stack(rows);
    EXPECT_LT((h[i] - expected).abs().max().item<double>(), 1e-8) << i << h[i] << expected;
  }
  EXPECT_EQ(inference::parse_likelihood("bernoulli", "--likelihood"), inference::Likelihood::bernoulli);
  EXPECT_THROW(inference::parse_likelihood("poisson", "--likelihood"), Error);
}
