#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/flows/flow.h"
#include "pae/flows/fused_coupling.h"
#include "pae/flows/latent_flow.h"
#include "pae/flows/spline.h"
#include "pae/nn/blas.h"
#include "pae/train/flow_run.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae::flows;

namespace {

/// Puts every parameter of m at random values of scale `scale` (conditioners included), so
/// that the round trip exercises non-trivial transforms rather than the identity start.
void randomize(torch::nn::Module& m, double scale) {
  torch::NoGradGuard g;
  for (auto& p : m.parameters()) p.copy_(torch::randn_like(p) * scale);
}

/// Inputs with the awkward cases: far outside the spline's tail bound, exactly on it, and
/// on the uniform grid of bin edges of an identity-initialised spline.
torch::Tensor awkward_inputs(int64_t b, int64_t d, torch::Dtype dtype) {
  auto x = torch::randn({b, d}, dtype) * 2;
  if (b >= 8) {
    x[0].fill_(50.0);
    x[1].fill_(-1e3);
    x[2].fill_(3.0);
    x[3].fill_(-3.0);
    x[4] = torch::linspace(-3, 3, d, dtype);
    x[5].fill_(0.75);  // an edge of 8 equal bins on [-3, 3]
  }
  return x;
}

torch::Tensor jacobian_logdet(Transform& t, const torch::Tensor& x) {
  // x:[1,D] -> log|det J| from autograd, one row at a time.
  const int64_t d = x.size(1);
  auto xi = x.clone().requires_grad_(true);
  auto z = t.forward(xi).first;
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < d; ++i) {
    auto g = torch::autograd::grad({z.select(1, i).sum()}, {xi}, {}, /*retain_graph=*/true)[0];
    rows.push_back(g.squeeze(0));
  }
  return std::get<1>(torch::linalg_slogdet(torch::stack(rows)));
}

FlowOptions small_options() {
  FlowOptions o;
  o.hidden = 16;
  o.hidden_layers = 2;
  o.bins = 8;
  o.tail_bound = 3.0;
  return o;
}

}  // namespace

TEST(Transforms, EveryRegisteredTransformInvertsWithConsistentLogDet) {
  PAE_DEVICE_UNDER_TEST(device);
  auto& reg = TransformRegistry::instance();
  ASSERT_GE(reg.names().size(), 7u);
  for (const auto& name : reg.names()) {
    for (int64_t d : {1, 2, 5, 32}) {
      for (int64_t layer : {0, 1}) {
        SCOPED_TRACE(name + " dim " + std::to_string(d) + " layer " + std::to_string(layer));
        torch::manual_seed(d * 10 + layer);
        auto o = small_options();
        o.conditioner = layer == 0 ? "mlp" : "resnet";
        auto t = reg.create(name, d, o, layer);
        t->to(device, torch::kFloat64);
        // Data-dependent init, then random parameters on top of it.
        t->initialize((torch::randn({64, d}, torch::kFloat64) * 3 + 1).to(device));
        randomize(*t, 0.3);
        t->eval();
        auto x = awkward_inputs(16, d, torch::kFloat64).to(device);
        auto [z, ld] = t->forward(x);
        auto [xr, ild] = t->inverse(z);
        ASSERT_EQ(ld.sizes(), (std::vector<int64_t>{16}));
        EXPECT_TRUE(torch::isfinite(z).all().item<bool>());
        EXPECT_TRUE(torch::isfinite(ld).all().item<bool>());
        EXPECT_LT((xr - x).abs().max().item<double>(), 1e-8);
        EXPECT_LT((ld + ild).abs().max().item<double>(), 1e-8);
        if (d <= 5) {
          for (int64_t i = 0; i < 6; ++i) {
            auto expected = jacobian_logdet(*t, x.slice(0, i, i + 1));
            EXPECT_NEAR(ld[i].item<double>(), expected.item<double>(), 1e-6) << "row " << i;
          }
        }
      }
    }
  }
}

TEST(Transforms, PermutationGradientsGatherByTheInversePermutation) {
  // A permutation is linear, so <w, P x> = <grad_x <w, P x>, x> for any w: a backward that
  // gathered by the permutation instead of its inverse fails this (for a permutation that is
  // not its own inverse), and the gradient, itself differentiable, passes it again.
  auto& reg = TransformRegistry::instance();
  for (const std::string name : {"reverse", "random_permutation"}) {
    for (int64_t layer : {0, 1, 2}) {
      auto t = reg.create(name, 7, small_options(), layer);
      auto x = torch::randn({5, 7}, torch::kFloat64).requires_grad_(true);
      auto w = torch::randn({5, 7}, torch::kFloat64).requires_grad_(true);
      const auto s = (w * t->forward(x).first).sum();
      const auto g = torch::autograd::grad({s}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
      EXPECT_NEAR((g * x).sum().item<double>(), s.item<double>(), 1e-12) << name << " " << layer;
      EXPECT_TRUE(torch::equal(std::get<0>(g.sort(1)), std::get<0>(w.sort(1)))) << "a gradient entry per weight";
      // d/dw <g, x> = P x again.
      const auto gw = torch::autograd::grad({(g * x).sum()}, {w})[0];
      EXPECT_TRUE(torch::allclose(gw, t->forward(x).first.detach(), 0, 0)) << name;
    }
  }
}

TEST(Transforms, CouplingParameterGradientsMatchFiniteDifferences) {
  // The couplings' fused kernels (values forward, gradients backward) against central
  // differences of the same forward, for the conditioner's weights and the input, in float64;
  // and the gradient differentiated again (create_graph) against the plain one.
  for (const std::string name : {"affine_coupling", "spline_coupling"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(11);
    auto t = TransformRegistry::instance().create(name, 6, small_options(), 0);
    t->to(torch::kFloat64);
    randomize(*t, 0.3);
    auto x = awkward_inputs(40, 6, torch::kFloat64).clamp(-2.5, 2.5);
    auto w = torch::randn({40, 6}, torch::kFloat64);
    auto objective = [&](const torch::Tensor& in) {
      auto [z, ld] = t->forward(in);
      return (w * z).sum() + 0.7 * ld.sum();
    };
    auto xg = x.clone().requires_grad_(true);
    const auto f = objective(xg);
    auto params = t->parameters();
    std::vector<torch::Tensor> inputs = {xg};
    inputs.insert(inputs.end(), params.begin(), params.end());
    const auto grads = torch::autograd::grad({f}, inputs, {}, /*retain_graph=*/true, /*create_graph=*/true);
    // Second order: d/dx <grad_x f, v> by autograd through the backward, against differences of grad_x.
    auto v = torch::randn_like(x);
    const auto hv = torch::autograd::grad({(grads[0] * v).sum()}, {xg})[0];
    auto grad_at = [&](const torch::Tensor& at) {
      auto a = at.clone().requires_grad_(true);
      return torch::autograd::grad({objective(a)}, {a})[0];
    };
    const auto fd_hv = (grad_at(x + 1e-5 * v) - grad_at(x - 1e-5 * v)) / 2e-5;
    EXPECT_TRUE(torch::allclose(hv, fd_hv, 1e-4, 1e-4)) << "max diff " << (hv - fd_hv).abs().max().item<double>();
    const double h = 1e-6;
    for (size_t k = 0; k < inputs.size(); ++k) {
      auto flat = inputs[k].detach().view(-1);
      for (int64_t j : {int64_t(0), flat.numel() / 2, flat.numel() - 1}) {
        torch::NoGradGuard g;
        const double v = flat[j].item<double>();
        flat[j] = v + h;
        const double up = objective(xg.detach()).item<double>();
        flat[j] = v - h;
        const double down = objective(xg.detach()).item<double>();
        flat[j] = v;
        const double fd = (up - down) / (2 * h), ad = grads[k].view(-1)[j].item<double>();
        EXPECT_NEAR(ad, fd, 1e-5 * std::max(1.0, std::abs(fd))) << "input " << k << " entry " << j;
      }
    }
  }
}

TEST(Transforms, FusedCouplingsMatchTheOperationsTheyReplace) {
  // The fused node (one forward pass over row blocks, backward over row blocks and feature
  // blocks), affine and spline, against the same map from LibTorch operations: values and every
  // gradient, in both precisions, on one and two threads (other blocks), both parities and an
  // odd width (unequal halves), conditioners of 1 and 3 layers (the latter also with dropout,
  // whose masks the node must draw as the separate operations draw them), batches that do not
  // split evenly, spline inputs inside the bound and in both tails.
  if (!pae::nn::blas::has_sgemm() || !pae::nn::blas::has_dgemm())
    GTEST_SKIP() << "no float and double product exposed by this LibTorch: the couplings take LibTorch's operations";
  const int before = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (int64_t bins : {0, 5}) {
      for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
        for (const auto& cols : {std::array<int64_t, 3>{0, 3, 3}, {4, 3, 0}, {0, 1, 1}}) {
          for (const auto& [n_layers, dropout] : {std::pair<int64_t, double>{1, 0.0}, {3, 0.0}, {3, 0.3}}) {
            for (int64_t batch : {1, 33}) {
              SCOPED_TRACE(::testing::Message()
                           << "threads " << threads << " bins " << bins << " dtype " << dtype << " identity_begin "
                           << cols[0] << " n_identity " << cols[1] << " layers " << n_layers << " dropout " << dropout
                           << " batch " << batch);
              torch::manual_seed(5);
              fused::CouplingSpec spec{cols[0], cols[1], cols[2], bins, {}, dropout};
              const int64_t d = cols[0] > 0 ? cols[0] + cols[1] : 2 * cols[1] + 1, nt = d - cols[1];
              std::vector<torch::Tensor> layers;
              int64_t in = cols[1];
              for (int64_t k = 0; k < n_layers; ++k) {
                const int64_t out = k + 1 < n_layers ? 9 : nt * spec.params_per_feature();
                layers.push_back((torch::randn({out, in}, dtype) * 0.7).requires_grad_(true));
                layers.push_back((torch::randn({out}, dtype) * 0.3).requires_grad_(true));
                in = out;
              }
              auto x = (torch::randn({batch, d}, dtype) * 2).requires_grad_(true);
              ASSERT_TRUE(fused::applies(x, layers, spec));
              torch::manual_seed(6);
              auto [y, ld] = fused::coupling_mlp(x, layers, spec);
              torch::manual_seed(6);
              auto [ry, rld] = fused::coupling_reference(x, layers, spec);
              const double tol = dtype == torch::kFloat64 ? 1e-10 : bins ? 1e-4 : 2e-5;
              EXPECT_TRUE(torch::allclose(y, ry, tol, tol)) << (y - ry).abs().max().item<double>();
              EXPECT_TRUE(torch::allclose(ld, rld, tol, tol)) << (ld - rld).abs().max().item<double>();
              auto wy = torch::randn_like(y), wl = torch::randn_like(ld);
              std::vector<torch::Tensor> inputs = {x};
              inputs.insert(inputs.end(), layers.begin(), layers.end());
              const auto g = torch::autograd::grad({y, ld}, inputs, {wy, wl});
              const auto rg = torch::autograd::grad({ry, rld}, inputs, {wy, wl});
              for (size_t i = 0; i < g.size(); ++i) {
                const double scale = std::max(1.0, rg[i].abs().max().item<double>());
                EXPECT_TRUE(torch::allclose(g[i], rg[i], tol * 10, tol * 10 * scale))
                    << "input " << i << ": max diff " << (g[i] - rg[i]).abs().max().item<double>();
              }
            }
          }
        }
      }
    }
  }
  at::set_num_threads(before);
}

TEST(Transforms, CouplingsRunFusedWithAnMlpConditioner) {
  // The fused node is what the couplings run, in training with dropout as in evaluation (so the
  // test above covers the models trained); a residual conditioner runs the separate operations.
  if (!pae::nn::blas::has_sgemm())
    GTEST_SKIP() << "no float product exposed by this LibTorch: the couplings take LibTorch's operations";
  for (const std::string name : {"affine_coupling", "spline_coupling"}) {
    SCOPED_TRACE(name);
    auto o = small_options();
    o.dropout = 0.2;
    auto t = TransformRegistry::instance().create(name, 6, o, 1);
    auto x = torch::randn({8, 6}).requires_grad_(true);
    auto node = [&](Transform& tr) { return tr.forward(x).first.grad_fn()->name(); };
    EXPECT_NE(node(*t).find("FusedCoupling"), std::string::npos) << node(*t);
    t->eval();
    EXPECT_NE(node(*t).find("FusedCoupling"), std::string::npos) << node(*t);
    o.conditioner = "resnet";
    auto resnet = TransformRegistry::instance().create(name, 6, o, 1);
    EXPECT_EQ(node(*resnet).find("FusedCoupling"), std::string::npos) << node(*resnet);
  }
}

TEST(Transforms, Float32RoundTripAtInitialScale) {
  for (const auto& name : TransformRegistry::instance().names()) {
    SCOPED_TRACE(name);
    torch::manual_seed(1);
    auto t = TransformRegistry::instance().create(name, 5, small_options(), 0);
    t->initialize(torch::randn({64, 5}));
    // Conditioners at their initial scale: perturb only the zeroed output layers slightly.
    {
      torch::NoGradGuard g;
      for (auto& p : t->parameters()) p.add_(torch::randn_like(p) * 0.05);
    }
    t->eval();
    auto x = awkward_inputs(16, 5, torch::kFloat32);
    auto [z, ld] = t->forward(x);
    auto [xr, ild] = t->inverse(z);
    EXPECT_LT(((xr - x).abs() / (1 + x.abs())).max().item<double>(), 1e-4);
    EXPECT_LT((ld + ild).abs().max().item<double>(), 1e-4);
  }
}

TEST(Transforms, IdentityInitialisation) {
  for (const auto& name : TransformRegistry::instance().names()) {
    if (name == "reverse" || name == "random_permutation") continue;  // permutations by design
    if (name == "asinh_tails") continue;  // starts at a = 0.1, near the identity (a = 0 would not learn)
    SCOPED_TRACE(name);
    auto t = TransformRegistry::instance().create(name, 6, small_options(), 1);
    t->to(torch::kFloat64);
    t->eval();
    auto x = awkward_inputs(16, 6, torch::kFloat64);
    auto [z, ld] = t->forward(x);
    if (name == "lu_linear") {
      // Identity up to its fixed permutation: sorted rows agree, log|det| is zero.
      EXPECT_TRUE(torch::allclose(std::get<0>(z.sort(1)), std::get<0>(x.sort(1)), 0, 1e-12));
    } else {
      // Parameters are created in float32: the identity holds to float32 rounding of the
      // spline's unit-derivative parameter, and to batch norm's eps (1e-5).
      EXPECT_LT(((z - x).abs() / (1 + x.abs())).max().item<double>(), name == "batch_norm" ? 1e-4 : 1e-6);
    }
    EXPECT_LT(ld.abs().max().item<double>(), name == "batch_norm" ? 1e-4 : 1e-6);
  }
}

TEST(Spline, AllInputsInTheTailsAndNoNaN) {
  PAE_DEVICE_UNDER_TEST(device);
  torch::manual_seed(2);
  const int64_t k = 8;
  const auto on = torch::TensorOptions().dtype(torch::kFloat64).device(device);
  auto x = torch::tensor({-10.0, 4.0, 1e6, -3.0000001}, torch::kFloat64).view({4, 1}).to(device);
  auto w = torch::randn({4, 1, k}, on), h = torch::randn({4, 1, k}, on);
  auto d = torch::randn({4, 1, k - 1}, on);
  for (bool inv : {false, true}) {
    auto [y, ld] = rational_quadratic_spline(x, w, h, d, inv);
    EXPECT_TRUE(torch::equal(y, x));
    EXPECT_TRUE(torch::equal(ld, torch::zeros_like(ld)));
  }
  // Gradients through the tails are finite (the unused spline branch must not leak NaN).
  auto xg = x.clone().requires_grad_(true);
  auto wg = w.clone().requires_grad_(true);
  auto [y, ld] = rational_quadratic_spline(xg, wg, h, d, false);
  (y.sum() + ld.sum()).backward();
  EXPECT_TRUE(torch::isfinite(xg.grad()).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(wg.grad()).all().item<bool>());
}

TEST(Spline, FusedKernelMatchesTensorImplementationAndAutograd) {
  // The fused CPU kernel's values and hand-derived gradients against autograd of the tensor
  // implementation, float64, with inputs in the tails, on knots and inside bins.
  torch::manual_seed(5);
  const int64_t k = 6, n = 400;
  auto p = (torch::randn({n, 2, 3 * k - 1}, torch::kFloat64) * 2).requires_grad_(true);
  auto x = (torch::rand({n, 2}, torch::kFloat64) * 8 - 4);
  x.index_put_({torch::indexing::Slice(0, 4), 0}, torch::tensor({-3.0, 3.0, 0.0, -5.0}, torch::kFloat64));
  x.requires_grad_(true);
  auto pr = p.detach().clone().requires_grad_(true);
  auto xr = x.detach().clone().requires_grad_(true);
  auto [y, ld] = rational_quadratic_spline_packed(x, p, k, false);
  auto [yr, ldr] =
      rational_quadratic_spline(xr, pr.narrow(-1, 0, k), pr.narrow(-1, k, k), pr.narrow(-1, 2 * k, k - 1), false);
  EXPECT_LT((y - yr).abs().max().item<double>(), 1e-12);
  EXPECT_LT((ld - ldr).abs().max().item<double>(), 1e-12);
  auto gy = torch::randn_like(y), gl = torch::randn_like(ld);
  ((y * gy).sum() + (ld * gl).sum()).backward();
  ((yr * gy).sum() + (ldr * gl).sum()).backward();
  EXPECT_LT((x.grad() - xr.grad()).abs().max().item<double>(), 1e-9);
  EXPECT_LT((p.grad() - pr.grad()).abs().max().item<double>(), 1e-9);
  EXPECT_GT(p.grad().abs().sum().item<double>(), 1.0);  // the comparison is not vacuous
  // The fused inverse (no gradient) agrees with the tensor inverse.
  torch::NoGradGuard no_grad;
  auto [xi, li] = rational_quadratic_spline_packed(y, p, k, true);
  auto [xir, lir] =
      rational_quadratic_spline(y, p.narrow(-1, 0, k), p.narrow(-1, k, k), p.narrow(-1, 2 * k, k - 1), true);
  EXPECT_LT((xi - xir).abs().max().item<double>(), 1e-10);
  EXPECT_LT((li - lir).abs().max().item<double>(), 1e-10);
  EXPECT_LT((xi - x).abs().max().item<double>(), 1e-8);
}

TEST(Spline, Float32KernelKeepsItsKnotsForTheBackwardPass) {
  // float32 rows save their softmax probabilities in the forward pass and the backward pass
  // rebuilds the knots from them: its gradients must be those of the float64 tensor version
  // on the same (float) inputs, to float rounding.
  torch::manual_seed(6);
  const int64_t k = 8, n = 3000;
  auto p = (torch::randn({n, 3 * k - 1}) * 2).requires_grad_(true);
  auto x = (torch::rand({n}) * 8 - 4).requires_grad_(true);
  auto [y, ld] = rational_quadratic_spline_packed(x, p, k, false);
  auto xr = x.detach().to(torch::kFloat64).requires_grad_(true);
  auto pr = p.detach().to(torch::kFloat64).requires_grad_(true);
  auto [yr, ldr] =
      rational_quadratic_spline(xr, pr.narrow(-1, 0, k), pr.narrow(-1, k, k), pr.narrow(-1, 2 * k, k - 1), false);
  auto gy = torch::randn({n}, torch::kFloat64), gl = torch::randn({n}, torch::kFloat64);
  ((y * gy.to(torch::kFloat32)).sum() + (ld * gl.to(torch::kFloat32)).sum()).backward();
  ((yr * gy).sum() + (ldr * gl).sum()).backward();
  EXPECT_TRUE(torch::allclose(x.grad().to(torch::kFloat64), xr.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(p.grad().to(torch::kFloat64), pr.grad(), 1e-5, 1e-5))
      << (p.grad().to(torch::kFloat64) - pr.grad()).abs().max().item<double>();
  EXPECT_GT(p.grad().abs().sum().item<double>(), 1.0);
}

TEST(Spline, ExtremeBinsAndNegativeDiscriminantStayFinite) {
  // Very uneven bins and derivatives at their bounds make the inverse's discriminant round
  // slightly below zero in float32: the guard must keep outputs finite and inside the bin.
  const int64_t k = 16, n = 20000;
  torch::manual_seed(3);
  auto w = torch::randn({n, k}) * 8, h = torch::randn({n, k}) * 8, d = torch::randn({n, k - 1}) * 12;
  auto y = (torch::rand({n}) * 6 - 3);
  auto [x, ld] = rational_quadratic_spline(y, w, h, d, /*inverse=*/true);
  EXPECT_TRUE(torch::isfinite(x).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(ld).all().item<bool>());
  EXPECT_LE(x.abs().max().item<float>(), 3.0f + 1e-5f);
  // The same in float64 round-trips to 1e-8 even for these shapes.
  auto y64 = y.to(torch::kFloat64);
  auto [x64, ld64] =
      rational_quadratic_spline(y64, w.to(torch::kFloat64), h.to(torch::kFloat64), d.to(torch::kFloat64), true);
  auto [yr, fld] =
      rational_quadratic_spline(x64, w.to(torch::kFloat64), h.to(torch::kFloat64), d.to(torch::kFloat64), false);
  EXPECT_LT((yr - y64).abs().max().item<double>(), 1e-8);
  EXPECT_LT((fld + ld64).abs().max().item<double>(), 1e-8);
}

TEST(Flow, EveryFeatureIsTransformedWhateverThePermutation) {
  // A feature that only ever conditions shows up as a unit row of the flow's Jacobian.
  for (const char* perm : {"reverse", "random", "lu"}) {
    for (int64_t d : {2, 5}) {
      SCOPED_TRACE(std::string(perm) + " dim " + std::to_string(d));
      torch::manual_seed(d);
      auto o = small_options();
      o.permutation = perm;
      o.layers = 3;
      auto flow = build_flow(d, o);
      flow->to(torch::kFloat64);
      randomize(*flow, 0.3);
      auto x = torch::randn({1, d}, torch::kFloat64).requires_grad_(true);
      auto z = flow->forward(x).first;
      for (int64_t i = 0; i < d; ++i) {
        auto row = torch::autograd::grad({z[0][i]}, {x}, {}, /*retain_graph=*/true)[0][0];
        for (int64_t k = 0; k < d; ++k) {
          auto unit = torch::zeros({d}, torch::kFloat64);
          unit[k] = 1;
          EXPECT_GT((row - unit).abs().max().item<double>(), 1e-3) << "output " << i << " is input " << k;
        }
      }
    }
  }
}

TEST(Flow, LogProbIntegratesAndSamplesAreTheInverseOfTheNoise) {
  // A 1-D flow's density integrates to 1 (trapezoid rule on a wide grid).
  torch::manual_seed(4);
  auto o = small_options();
  o.layers = 3;
  auto flow = build_flow(1, o);
  flow->to(torch::kFloat64);
  randomize(*flow, 0.3);
  flow->eval();
  auto grid = torch::linspace(-30, 30, 200001, torch::kFloat64).view({-1, 1});
  auto p = torch::exp(flow->log_prob(grid));
  const double integral = torch::trapz(p, grid.view({-1})).item<double>();
  EXPECT_NEAR(integral, 1.0, 1e-4);
  for (const char* type : {"nsf", "realnvp"}) {
    o.type = type;
    auto f = build_flow(4, o);
    f->to(torch::kFloat64);
    randomize(*f, 0.3);
    f->eval();
    torch::NoGradGuard no_grad;
    // sample() pushes N(0, T^2 I) noise through the inverse: forward must give the noise back,
    // and log p of a sample must match the change of variables at that noise.
    torch::manual_seed(9);
    auto s = f->sample(32, 0.8);
    torch::manual_seed(9);
    const auto noise = torch::randn({32, 4}, torch::kFloat64) * 0.8;
    EXPECT_EQ(s.sizes(), (std::vector<int64_t>{32, 4}));
    const auto [back, logdet] = f->forward(s);
    EXPECT_TRUE(torch::allclose(back, noise, 1e-8, 1e-8)) << type;
    EXPECT_FALSE(torch::allclose(s, noise, 1e-3, 1e-3)) << type << ": the randomised flow must not be the identity";
    const auto expected = -0.5 * (noise.pow(2).sum(1) + 4 * std::log(2 * M_PI)) + logdet;
    EXPECT_TRUE(torch::allclose(f->log_prob(s), expected, 1e-8, 1e-8)) << type;
  }
  o.type = "glow";
  EXPECT_THROW(build_flow(4, o), pae::Error);
}

TEST(LatentFlow, FitWritesItsRunAndMatchesTheGaussianOnGaussianData) {
  // Correlated Gaussian latents: the flow (identity at start, standardised input) must reach
  // the full-covariance Gaussian's log-likelihood within a small margin, and the outputs exist.
  PAE_DEVICE_UNDER_TEST(device);
  pae::testing::TempDir tmp;
  torch::manual_seed(5);
  auto mix = torch::randn({3, 3}, torch::kFloat64);
  auto make = [&](int64_t n) { return (torch::randn({n, 3}, torch::kFloat64).matmul(mix) + 2).to(torch::kFloat32); };
  pae::data::write_npy(tmp.file("train.npy"), make(2000));
  pae::data::write_npy(tmp.file("val.npy"), make(500));
  pae::data::write_npy(tmp.file("test.npy"), make(500));
  pae::Config c = pae::parse_config(
      "flow:\n  type: realnvp\n  layers: 2\n  hidden: 16\ntrain:\n  epochs: 10\n  lr: 3.0e-3\n  batch_size: 100\n",
      "t.yml");
  auto summary = pae::train::fit_latent_flow(c, {tmp.file("train.npy"), tmp.file("val.npy"), tmp.file("test.npy")},
                                             {tmp.file("flow"), device.str(), false, false, true});
  EXPECT_EQ(summary.epochs, 10);
  EXPECT_NE(pae::read_text(tmp.file("flow/flow.log")).find("on " + device.str()), std::string::npos);
  EXPECT_GT(summary.mean_log_prob.at("test"), summary.gaussian_log_prob.at("test") - 0.3);
  for (const char* f : {"config.yml", "metrics.jsonl", "latents.json", "summary.json", "checkpoints/best.pt",
                        "log_prob/train.npy", "log_prob/val.npy", "log_prob/test.npy"})
    EXPECT_TRUE(std::filesystem::exists(tmp.path() / "flow" / f)) << f;
  auto lp = pae::data::read_npy(tmp.file("flow/log_prob/test.npy"));
  EXPECT_EQ(lp.sizes(), (std::vector<int64_t>{500}));
  // Reloading gives the same log-densities.
  auto flow = pae::train::load_latent_flow(tmp.file("flow"), nullptr, "", device);
  EXPECT_EQ(flow->parameters().front().device(), device);
  torch::NoGradGuard g;
  auto again = flow->log_prob(pae::data::read_npy(tmp.file("test.npy")).to(device)).cpu();
  EXPECT_TRUE(torch::allclose(again, lp, 1e-4, 1e-4));
  // Latents of another dimension are refused with the file named.
  pae::data::write_npy(tmp.file("bad_val.npy"), torch::randn({10, 4}));
  auto msg = pae::testing::error_of([&] {
    pae::train::fit_latent_flow(c, {tmp.file("train.npy"), tmp.file("bad_val.npy"), ""},
                                {tmp.file("flow2"), "", false, false, true});
  });
  EXPECT_NE(msg.find("bad_val.npy"), std::string::npos) << msg;
  // A constant dimension (a collapsed latent) and a single latent are refused, naming the file;
  // nothing is written.
  auto flat = torch::randn({50, 3});
  flat.select(1, 1).fill_(0.7f);
  pae::data::write_npy(tmp.file("flat.npy"), flat);
  msg = pae::testing::error_of([&] {
    pae::train::fit_latent_flow(c, {tmp.file("flat.npy"), "", ""}, {tmp.file("flow3"), "", false, false, true});
  });
  EXPECT_NE(msg.find("flat.npy: latent dimension(s) 1 are constant"), std::string::npos) << msg;
  pae::data::write_npy(tmp.file("one.npy"), torch::randn({1, 3}));
  msg = pae::testing::error_of([&] {
    pae::train::fit_latent_flow(c, {tmp.file("one.npy"), "", ""}, {tmp.file("flow3"), "", false, false, true});
  });
  EXPECT_NE(msg.find("one.npy: 1 training latent"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(tmp.path() / "flow3"));
}

TEST(LatentFlow, GaussianBaselineMatchesClosedForm) {
  // Standard normal data in 2-D: the fitted Gaussian's mean log-density on the same data is
  // -(D/2)(1 + log 2 pi) up to sampling error.
  torch::manual_seed(6);
  auto z = torch::randn({200000, 2}, torch::kFloat64);
  EXPECT_NEAR(gaussian_mean_log_prob(z, z), -(1 + std::log(2 * M_PI)), 5e-3);
}

TEST(Flow, ChiSquareQuantilesAndTheTypicalSetCheck) {
  // Two degrees of freedom: the closed form -2 ln(1 - p); more: printed tables.
  for (const double p : {0.005, 0.5, 0.995}) EXPECT_NEAR(pae::flows::chi2_quantile(2, p), -2 * std::log(1 - p), 1e-9);
  EXPECT_NEAR(pae::flows::chi2_quantile(32, 0.995), 56.328, 1e-3);
  EXPECT_NEAR(pae::flows::chi2_quantile(32, 0.005), 15.134, 1e-3);
  EXPECT_NEAR(pae::flows::chi2_quantile(8, 0.005), 1.344, 1e-3);
  // A flow standardised on Gaussian latents (independent dimensions of different scales) holds ~99%
  // of fresh ones in its typical set, and none of the same latents blown up tenfold.
  torch::manual_seed(4);
  const auto scale = torch::linspace(0.5, 4, 6);
  const auto z = torch::randn({20000, 6}) * scale + 3, fresh = torch::randn({4000, 6}) * scale + 3;
  pae::flows::FlowOptions o;
  o.type = "realnvp";
  o.layers = 2;
  o.hidden = 16;
  pae::flows::LatentFlow flow(6, o);
  flow.fit_standardisation(z);
  EXPECT_NEAR(pae::flows::typical_set_fraction(flow, fresh), 0.99, 0.02);
  EXPECT_LT(pae::flows::typical_set_fraction(flow, (fresh - 3) * 10 + 3), 0.05);
}

namespace {
/// Records the loss of each step instead of stepping.
struct LossRecorder : pae::testing::OneGroupContext {
  LossRecorder() : OneGroupContext("flow", {torch::zeros({1}, torch::requires_grad())}, 1e-3) {}
  void step(const std::string&, const at::Tensor& loss, const pae::nn::TensorTerms&) override {
    losses.push_back(loss.item<double>());
  }
  std::vector<double> losses;
};
}  // namespace

TEST(LatentFlow, TrainingNoiseIsInUnitsOfEachLatentsStd) {
  // At initialisation the flow is the identity on standardised latents, so the training loss is
  // E|u + n eps|^2 / 2 + D/2 log 2 pi + sum log std with u standardised: D (1 + n^2) / 2 plus
  // constants, whatever the latents' scale. Noise in raw units would vanish at std 100 and
  // swamp the data at std 0.01.
  const int64_t d = 4;
  const double n = 0.5;
  for (const double scale : {0.01, 100.0}) {
    torch::manual_seed(1);
    const auto z = torch::randn({50000, d}, torch::kFloat64) * scale + 7;
    FlowOptions o;
    o.type = "realnvp";
    o.layers = 1;
    o.hidden = 8;
    LatentFlow flow(d, o);
    flow.to(torch::kFloat64);
    flow.fit_standardisation(z);
    flow.set_training_noise(n);
    LossRecorder ctx;
    flow.train_step(pae::nn::Batch{z, {}}, ctx);
    ASSERT_EQ(ctx.losses.size(), 1u);
    const double constants = 0.5 * d * std::log(2 * M_PI) + flow.named_buffers()["std"].log().sum().item<double>();
    EXPECT_NEAR(ctx.losses[0] - constants, d * (1 + n * n) / 2, 0.03 * d) << "latent scale " << scale;
  }
}

TEST(Flow, ConditionerDropoutActsOnlyInTraining) {
  FlowOptions o;
  o.layers = 2;
  o.hidden = 16;
  o.dropout = 0.5;
  auto flow = build_flow(4, o);
  randomize(*flow, 0.3);
  const auto x = torch::randn({64, 4});
  flow->train();
  EXPECT_FALSE(torch::equal(flow->log_prob(x), flow->log_prob(x))) << "dropout 0.5 left training deterministic";
  flow->eval();
  EXPECT_TRUE(torch::equal(flow->log_prob(x), flow->log_prob(x)));
  o.dropout = 0;
  auto plain = build_flow(4, o);
  randomize(*plain, 0.3);
  plain->train();
  EXPECT_TRUE(torch::equal(plain->log_prob(x), plain->log_prob(x)));
  o.dropout = 1;
  EXPECT_THROW(build_flow(4, o), pae::Error);
}

TEST(Flow, AsinhTailsComeFirstAndCompressHeavyTails) {
  FlowOptions o;
  o.layers = 1;
  o.hidden = 8;
  const auto plain = build_flow(3, o);
  o.tails = "asinh";
  const auto tails = build_flow(3, o);
  EXPECT_EQ(tails->parameters().size(), plain->parameters().size() + 1);  // one log_a per flow
  // At a = 0.1 the map is near the identity where the data are, and logarithmic far out: a point
  // at 1e4 std costs the Gaussian base ~5e7 nats as it is and ~6e3 compressed (asinh(1e3) / 0.1 = 76).
  const auto x = torch::tensor({{0.5, -1.0, 2.0}, {1e4, -1e4, 1.0}}, torch::kFloat64);
  tails->to(torch::kFloat64);
  plain->to(torch::kFloat64);
  const auto [z, logdet] = tails->forward(x);
  EXPECT_NEAR(z[0][2].item<double>(), std::asinh(0.2) / 0.1, 1e-6);
  EXPECT_LT(-tails->log_prob(x)[1].item<double>(), 1e4);
  EXPECT_GT(-plain->log_prob(x)[1].item<double>(), 4e7);
  o.tails = "cubic";
  EXPECT_THROW(build_flow(3, o), pae::Error);
}

TEST(LatentFlow, DropoutAnnealsLinearlyToZeroAtTheLastEpoch) {
  FlowOptions o;
  o.layers = 2;
  o.hidden = 16;
  o.dropout = 0.2;
  o.dropout_anneal = 0.5;
  LatentFlow flow(4, o);
  randomize(flow.flow(), 0.3);
  flow.set_dropout_schedule(10);
  for (int64_t e = 1; e <= 5; ++e) EXPECT_DOUBLE_EQ(flow.dropout_at(e), 0.2) << e;
  EXPECT_DOUBLE_EQ(flow.dropout_at(6), 0.2 * 4 / 5);
  EXPECT_DOUBLE_EQ(flow.dropout_at(9), 0.2 / 5);
  EXPECT_DOUBLE_EQ(flow.dropout_at(10), 0.0);
  o.dropout_anneal = 1;  // constant
  LatentFlow constant(4, o);
  constant.set_dropout_schedule(10);
  EXPECT_DOUBLE_EQ(constant.dropout_at(10), 0.2);
  // train_step applies the epoch's rate: the last epoch trains without dropout.
  const auto x = torch::randn({64, 4});
  struct AtEpoch : LossRecorder {
    int64_t e = 1;
    int64_t epoch() const override { return e; }
  } ctx;
  flow.train();
  flow.train_step(pae::nn::Batch{x, {}}, ctx);
  EXPECT_FALSE(torch::equal(flow.log_prob(x), flow.log_prob(x))) << "epoch 1: dropout 0.2";
  ctx.e = 10;
  flow.train_step(pae::nn::Batch{x, {}}, ctx);
  EXPECT_TRUE(torch::equal(flow.log_prob(x), flow.log_prob(x))) << "epoch 10: no dropout";
  EXPECT_THROW(flow.flow().set_dropout(1), pae::Error);
}
