// The known-density sets of pae-bench density: their samplers and closed-form densities agree.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "pae/flows/density_sets.h"
#include "pae/flows/latent_flow.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;

namespace {

/// The integral of exp(log p) over the box [x0, x1] x [y0, y1] by the midpoint rule.
double box_mass(const flows::KnownDensity& d, double x0, double x1, double y0, double y1, int nx, int ny) {
  const auto xs = torch::linspace(x0, x1, nx + 1, torch::kFloat64),
             ys = torch::linspace(y0, y1, ny + 1, torch::kFloat64);
  const auto xm = (xs.slice(0, 1) + xs.slice(0, 0, nx)) / 2, ym = (ys.slice(0, 1) + ys.slice(0, 0, ny)) / 2;
  const auto grid =
      torch::stack({xm.unsqueeze(1).expand({nx, ny}).reshape(-1), ym.unsqueeze(0).expand({nx, ny}).reshape(-1)}, 1);
  return d.log_prob(grid).exp().sum().item<double>() * (x1 - x0) / nx * (y1 - y0) / ny;
}

}  // namespace

TEST(DensitySets, TwoDimensionalSamplesFallInBoxesAsTheDensitySays) {
  const int64_t n = 200000;
  for (const auto& name : flows::density_set_names(2)) {
    SCOPED_TRACE(name);
    const auto d = flows::make_density(name, 2, 3);
    const auto x = d->sample(n, 11);
    ASSERT_EQ(x.sizes(), (std::vector<int64_t>{n, 2}));
    // Boxes 2 wide in x over [-3, 3]; in y the same, except for the nearly degenerate set, whose
    // second coordinate (tanh(x) + 1e-3 noise) needs a grid finer than its noise.
    const bool thin = name == "degenerate";
    for (double bx = -3; bx < 3; bx += 2) {
      for (double by = thin ? -1.01 : -3; by < (thin ? 1.0 : 3); by += thin ? 2.02 : 2) {
        const double by1 = by + (thin ? 2.02 : 2);
        const double mass = box_mass(*d, bx, bx + 2, by, by1, thin ? 200 : 400, thin ? 12000 : 400);
        const auto inside =
            (x.select(1, 0) >= bx) & (x.select(1, 0) < bx + 2) & (x.select(1, 1) >= by) & (x.select(1, 1) < by1);
        const double frac = inside.to(torch::kFloat64).mean().item<double>();
        const double sigma = std::sqrt(std::max(mass * (1 - mass), 1e-6) / double(n));
        EXPECT_NEAR(frac, mass, 5 * sigma + 2e-3)
            << "box [" << bx << ", " << bx + 2 << "] x [" << by << ", " << by1 << "]";
      }
    }
  }
}

TEST(DensitySets, TheTruthBeatsAnyGaussianAndTheGaussianSetIsItsOwnBaseline) {
  for (const int64_t dim : {8, 32}) {
    for (const auto& name : flows::density_set_names(dim)) {
      SCOPED_TRACE(name + " in " + std::to_string(dim));
      const auto d = flows::make_density(name, dim, 1);
      const auto train = d->sample(20000, 1), test = d->sample(20000, 2);
      const double truth = d->log_prob(test).mean().item<double>();
      const double gauss = flows::gaussian_mean_log_prob(train.to(torch::kFloat32), test.to(torch::kFloat32));
      ASSERT_TRUE(std::isfinite(truth));
      // Gibbs: E_p[log p] >= E_p[log q] for every q; the fitted Gaussian is one such q.
      if (name == "gaussian")
        EXPECT_NEAR(gauss, truth, 0.02 * double(dim) / 8);  // the same family: only estimation error
      else
        EXPECT_GT(truth, gauss + 0.1);
    }
  }
  EXPECT_NE(pae::testing::error_of([] { flows::make_density("rings", 8); }).find("valid: mixture_sinh"),
            std::string::npos);
}
