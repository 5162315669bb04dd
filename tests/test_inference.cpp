// Langevin chains against closed forms.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "pae/inference/langevin.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;

TEST(Langevin, GaussianEnergyGivesTheChainsClosedFormStationaryLaw) {
  // E(x) = ||x - mu||^2 / (2 s^2). The update x <- x - eps (x - mu) / s^2 + sigma xi is an AR(1)
  // chain with stationary mean mu and variance sigma^2 / (1 - (1 - eps / s^2)^2); with
  // sigma = sqrt(2 eps) (classic Langevin) that is s^2 / (1 - eps / (2 s^2)), close to s^2.
  PAE_DEVICE_UNDER_TEST(device);
  torch::manual_seed(0);
  const auto on = torch::TensorOptions().dtype(torch::kFloat64).device(device);
  const auto mu = torch::tensor({1.5, -2.0}, torch::kFloat64).to(device);
  const double s = 0.7, eps = 0.02, sigma = std::sqrt(2 * eps);
  inference::Energy energy = [&](const at::Tensor& x) { return (x - mu).pow(2).sum(1) / (2 * s * s); };
  inference::LangevinOptions o;
  o.steps = 400;
  o.step_size = eps;
  o.noise = sigma;
  inference::LangevinStats stats;
  const auto x = inference::langevin(energy, torch::zeros({20000, 2}, on), o, &stats);
  EXPECT_EQ(x.device(), device);
  const double a = 1 - eps / (s * s);
  const double variance = sigma * sigma / (1 - a * a);
  // 20,000 chains: standard error of the mean 0.005, of the variance about 1%.
  EXPECT_TRUE(torch::allclose(x.mean(0), mu, 0, 0.02)) << x.mean(0);
  EXPECT_TRUE(torch::allclose(x.var(0), torch::full({2}, variance, on), 0.04, 0)) << x.var(0) << variance;
  EXPECT_NEAR(variance, s * s, 0.03);
  EXPECT_LT(stats.energy_end, stats.energy_start);
  // Temperature T scales the drift: the stationary variance of the same chain with eps / T.
  o.temperature = 2;
  const auto hot = inference::langevin(energy, torch::zeros({20000, 2}, on), o);
  const double a2 = 1 - eps / 2 / (s * s);
  EXPECT_NEAR(hot.var(0).mean().item<double>(), sigma * sigma / (1 - a2 * a2), 0.04 * sigma * sigma / (1 - a2 * a2));
}

TEST(Langevin, SphereChainsStayOnTheSphereAndMoveDownhill) {
  // E(z) = -z . v on the unit sphere has its minimum at v / |v|: chains stay on the sphere and
  // gather around it.
  torch::manual_seed(1);
  const auto v = torch::tensor({0.0, 3.0, 4.0});
  inference::Energy energy = [&](const at::Tensor& z) { return -(z * v).sum(1); };
  inference::LangevinOptions o;
  o.steps = 50;
  o.step_size = 0.05;
  o.noise = 0.01;
  o.sphere = true;
  inference::LangevinStats stats;
  const auto z = inference::langevin(energy, torch::randn({500, 3}), o, &stats);
  EXPECT_TRUE(torch::allclose(z.norm(2, 1), torch::ones({500}), 0, 1e-5));
  EXPECT_GT((z.matmul(v) / 5).mean().item<double>(), 0.95);
  EXPECT_LT(stats.energy_end, stats.energy_start);
}

TEST(Langevin, PerSampleGradientClippingAndPixelClamp) {
  // Energy 50 x^2 has gradient 100 x: clipped to norm 0.01 per sample, a noiseless step of size
  // 10 moves each sample by exactly 0.1 along -x / |x|; clamping keeps pixels in [0, 1].
  const auto x0 = torch::full({4, 1, 2, 2}, 0.5);
  inference::Energy energy = [](const at::Tensor& x) { return 50 * x.pow(2).flatten(1).sum(1); };
  inference::LangevinOptions o;
  o.steps = 1;
  o.step_size = 10;
  o.noise = 0;
  o.grad_clip = 0.01;
  o.clamp = true;
  inference::LangevinStats stats;
  const auto x = inference::langevin(energy, x0, o, &stats);
  EXPECT_TRUE(torch::allclose(x, torch::full({4, 1, 2, 2}, 0.5 - 0.1 / 2), 0, 1e-6)) << x;  // 0.1 / sqrt(4 pixels)
  EXPECT_DOUBLE_EQ(stats.clipped, 1.0);
  EXPECT_NEAR(stats.grad_norm, 100.0, 1e-3);  // |100 * 0.5 * (1,1,1,1)| = 100
  o.step_size = 1000;                         // would leave [0, 1] without the clamp
  EXPECT_GE(inference::langevin(energy, x0, o).min().item<float>(), 0.0f);
  EXPECT_TRUE(x0.eq(0.5).all().item<bool>()) << "x0 must not be modified";
  // Clipped per row (2 pixels) instead: each row moves 0.1 along -(1, 1) / sqrt(2).
  o.step_size = 10;
  o.clip_rows = true;
  const auto rows = inference::langevin(energy, x0, o, &stats);
  EXPECT_TRUE(torch::allclose(rows, torch::full({4, 1, 2, 2}, 0.5 - 0.1 / std::sqrt(2.0)), 0, 1e-6)) << rows;
  EXPECT_DOUBLE_EQ(stats.clipped, 1.0);
}

TEST(Langevin, MetropolisAdjustmentRemovesTheStepSizeBias) {
  // On E(x) = x^2 / 2 the unadjusted chain with step 0.5 and noise 1 has stationary variance
  // 1 / (1 - (1 - 0.5)^2) = 4 / 3; the Metropolis-adjusted chain keeps N(0, 1) exactly.
  torch::manual_seed(3);
  inference::Energy energy = [](const at::Tensor& x) { return x.pow(2).sum(1) / 2; };
  inference::LangevinOptions o;
  o.steps = 150;
  o.step_size = 0.5;
  o.noise = 1.0;
  const auto x0 = torch::randn({20000, 1}, torch::kFloat64);
  EXPECT_NEAR(inference::langevin(energy, x0, o).var().item<double>(), 4.0 / 3.0, 0.05);
  o.metropolis = true;
  o.generator = at::detail::createCPUGenerator(11);
  inference::LangevinStats stats;
  const auto x = inference::langevin(energy, x0, o, &stats);
  EXPECT_NEAR(x.var().item<double>(), 1.0, 0.04);
  EXPECT_NEAR(x.mean().item<double>(), 0.0, 0.03);
  EXPECT_GT(stats.accepted, 0.5);
  EXPECT_LT(stats.accepted, 1.0);  // some proposals are refused: the adjustment is active
  o.generator = at::detail::createCPUGenerator(11);
  EXPECT_TRUE(torch::equal(inference::langevin(energy, x0, o), x));  // seeded: repeatable
  o.clamp = true;                                                    // a clamp changes the proposal's density: refused
  EXPECT_THROW(inference::langevin(energy, x0, o), Error);
}
