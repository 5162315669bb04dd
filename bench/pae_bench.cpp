// pae-bench: training throughput of the shipped models and the machine's GEMM peak.
//   pae-bench gemm            sgemm GFLOP/s (1024^3) at the chosen thread settings
//   pae-bench vae|ae [--epochs 1]   one Fashion-MNIST epoch of configs/fmnist_{vae,ae}.yml
//   pae-bench nsf|realnvp     flow fitting samples/s: 8 layers, 2x256 MLP conditioners, dim 32,
//                             batch 256, 8 bins, tail bound 3, reverse permutations
//   pae-bench toy             NSF on a 2-D ring; test log-likelihood vs the analytic density
//   pae-bench density [--dims 2,8,32] [--sets a,b] [--config FLOW.yml] [--set k=v]
//                             the config's flow fitted on each known-density set
//                             (pae/flows/density_sets.h): flow, Gaussian and true test
//                             log-likelihood, a JSON line each and runs/bench_density/results.md
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>

#include "density.h"
#include "pae/config.h"
#include "pae/data/dataset.h"
#include "pae/flows/flow.h"
#include "pae/models/autoencoder.h"
#include "pae/report/sinks.h"
#include "pae/train/engine.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/json.h"
#include "pae/util/runtime.h"
#include "pae/util/text.h"

namespace {

namespace report = pae::report;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double gemm_gflops(int64_t n, int reps) {
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto c = torch::mm(a, b);  // warm-up
  const double t0 = now();
  for (int i = 0; i < reps; ++i) c = torch::mm(a, b);
  return 2.0 * double(n) * n * n * reps / (now() - t0) / 1e9;
}

/// Runs the engine (no run directory) for `epochs` epochs and returns the best epoch's rate.
double engine_rate(pae::nn::Trainable& trainable, const pae::train::TrainData& data,
                   const pae::train::OptimizerOptions& opt, int64_t epochs, int64_t batch, report::MemorySink& sink) {
  pae::train::EngineOptions eo;
  eo.epochs = std::max<int64_t>(epochs, 1);
  eo.batch_size = batch;
  eo.optimizers[""] = opt;
  eo.quiet = true;
  eo.drop_singleton_batch = false;
  eo.rate_key = "rate";
  auto memory = std::shared_ptr<report::MetricsSink>(&sink, [](report::MetricsSink*) {});
  pae::train::Engine(eo, {memory, std::make_shared<report::LogSink>(eo.epochs)}).fit(trainable, data);
  double best = 0;
  for (const auto& r : sink.records) best = std::max(best, r.get("rate"));
  return best;
}

pae::train::TrainData tensor_data(const torch::Tensor& x) {
  pae::train::TrainData d;
  d.size = x.size(0);
  d.batch = [x](const torch::Tensor& idx) { return pae::nn::Batch{x.index_select(0, idx), {}}; };
  return d;
}

/// A plain flow as a trainable (the benchmark's model: no standardisation in front of it).
class FlowFit : public torch::nn::Module, public pae::nn::Trainable {
 public:
  explicit FlowFit(std::shared_ptr<pae::flows::Flow> flow) : flow_(register_module("flow", std::move(flow))) {}
  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override {
    return {{"flow", parameters()}};
  }
  void train_step(const pae::nn::Batch& batch, pae::nn::StepContext& ctx) override {
    auto loss = -flow_->log_prob(batch.x).mean();
    ctx.step("flow", loss);
    ctx.log("nll", loss);
  }
  pae::nn::Monitor monitor() const override { return {"nll", true}; }
  std::string signature() const override { return "bench-flow"; }
  pae::flows::Flow& flow() { return *flow_; }

 private:
  std::shared_ptr<pae::flows::Flow> flow_;
};

/// Flow fitting throughput on correlated Gaussian data of dimension 32.
int bench_flow(const std::string& type, int64_t epochs, double peak) {
  pae::flows::FlowOptions o;
  o.type = type;
  o.layers = 8;
  o.hidden = 256;
  o.hidden_layers = 2;
  o.bins = 8;
  o.tail_bound = 3;
  o.permutation = "reverse";
  torch::manual_seed(0);
  const int64_t n = 51200, d = 32, bs = 256;
  auto data = torch::matmul(torch::randn({n, d}), torch::randn({d, d}) / std::sqrt(double(d)));
  FlowFit flow(pae::flows::build_flow(d, o));
  pae::train::OptimizerOptions opt;
  opt.lr = 1e-3;
  report::MemorySink sink;
  const double best = engine_rate(flow, tensor_data(data), opt, epochs, bs, sink);
  std::printf("%s\n", pae::JsonObject()
                          .add("flow", type)
                          .add("samples_per_s", best)
                          .add("layers", int64_t(8))
                          .add("hidden", int64_t(256))
                          .add("dim", d)
                          .add("batch", bs)
                          .add("final_train_nll", sink.records.back().get("train_nll"))
                          .add("gemm_gflops", peak)
                          .str()
                          .c_str());
  return 0;
}

/// A ring: radius ~ N(2, 0.2^2), angle uniform. Its density is N(r; 2, 0.2) / (2 pi r)
/// (the mass at r < 0 is 1e-23), so the test log-likelihood has an exact reference.
int bench_toy(int64_t epochs) {
  torch::manual_seed(0);
  auto ring = [](int64_t n) {
    auto r = 2.0 + 0.2 * torch::randn({n}, torch::kFloat64);
    auto a = 2 * M_PI * torch::rand({n}, torch::kFloat64);
    return torch::stack({r * torch::cos(a), r * torch::sin(a)}, 1);
  };
  auto log_density = [](const torch::Tensor& x) {
    auto r = x.norm(2, 1);
    return -0.5 * ((r - 2.0) / 0.2).pow(2) - std::log(0.2 * std::sqrt(2 * M_PI)) - torch::log(2 * M_PI * r);
  };
  auto train = ring(50000), test = ring(20000);
  pae::flows::FlowOptions o;
  o.type = "nsf";
  o.layers = 6;
  o.hidden = 128;
  o.hidden_layers = 2;
  o.bins = 16;
  o.tail_bound = 4;
  o.permutation = "reverse";
  FlowFit flow(pae::flows::build_flow(2, o));
  flow.to(torch::kFloat64);
  pae::train::OptimizerOptions opt;
  opt.lr = 2e-3;
  opt.schedule = "cosine";
  report::MemorySink sink;
  engine_rate(flow, tensor_data(train), opt, epochs > 1 ? epochs : 40, 512, sink);
  torch::NoGradGuard g;
  const double model = flow.flow().log_prob(test).mean().item<double>();
  const double exact = log_density(test).mean().item<double>();
  std::printf("%s\n", pae::JsonObject()
                          .add("toy", "ring")
                          .add("test_log_likelihood", model)
                          .add("analytic", exact)
                          .add("gap_nats", exact - model)
                          .str()
                          .c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  pae::init_program();
  CLI::App app{"pae-bench: throughput benchmarks (not tests)"};
  std::string what = "vae", config_path;
  int threads = 0, blas_threads = 0;
  int64_t epochs = 1, limit = 0;
  app.add_option("what", what, "gemm | vae | ae | nsf | realnvp | toy | density")
      ->check(CLI::IsMember({"gemm", "vae", "ae", "nsf", "realnvp", "toy", "density"}));
  app.add_option("--config", config_path, "config (default configs/fmnist_<what>.yml)");
  app.add_option("--threads", threads, "LibTorch intra-op threads (0 = all cores)");
  app.add_option("--blas-threads", blas_threads, "OpenBLAS threads (0 = 1)");
  app.add_option("--epochs", epochs, "epochs to time");
  app.add_option("--limit", limit, "train on the first N images only (0 = all)");
  DensityBenchOptions dbo;
  std::string dims, sets;
  app.add_option("--dims", dims, "density: comma-separated dimensions (default 2,8,32)");
  app.add_option("--sets", sets, "density: comma-separated set names (default all)");
  app.add_option("--set", dbo.overrides, "density: override a key of the flow config");
  app.add_option("--work", dbo.work, "density: where the sets and fits go");
  app.add_option("--n-train", dbo.n_train, "density: training points")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  pae::ensure_fast_blas_kernels(argc, argv);
  try {
    pae::warn_if_slow_blas();
    const auto ts = pae::configure_threads({threads, blas_threads});
    const double peak = gemm_gflops(1024, 20);
    if (what == "gemm") {
      std::printf("%s\n", pae::JsonObject()
                              .add("gemm_gflops", peak)
                              .add("threads", ts.intra_op)
                              .add("blas_threads", ts.blas)
                              .str()
                              .c_str());
      return 0;
    }
    if (what == "nsf" || what == "realnvp") return bench_flow(what, epochs, peak);
    if (what == "toy") return bench_toy(epochs);
    if (what == "density") {
      if (!config_path.empty()) dbo.config = config_path;
      if (!dims.empty()) dbo.dims.clear();
      for (const auto& d : pae::split_list(dims)) {
        pae::require(d.find_first_not_of("0123456789") == std::string::npos, "--dims: '" + d + "' is not a dimension");
        dbo.dims.push_back(std::stoll(d));
      }
      dbo.sets = pae::split_list(sets);
      return bench_density(dbo);
    }
    if (config_path.empty()) config_path = "configs/fmnist_" + what + ".yml";
    auto config = pae::load_config(config_path);
    config.data.val_size = 0;
    if (limit > 0) config.data.subset = limit;
    auto train = pae::data::load_dataset(config.data, pae::data::Split::kTrain);
    torch::manual_seed(0);
    pae::models::ImageShape shape{train.images.size(1), train.images.size(2), train.images.size(3)};
    auto model = pae::models::build_autoencoder(config.model, shape);
    auto opt = pae::train::optimizer_options(config.train);
    opt.grad_clip = 0;
    report::MemorySink sink;
    const double best = engine_rate(*model, tensor_data(train.images), opt, epochs, config.train.batch_size, sink);
    pae::JsonObject out;
    out.add("model", what)
        .add("images_per_s", best)
        .add("threads", ts.intra_op)
        .add("blas_threads", ts.blas)
        .add("blas_core", pae::blas_info().core)
        .add("gemm_gflops", peak);
    if (config.model.arch == "mlp") {
      // Training FLOPs per image from the Linear layers: forward, grad-input and grad-weight
      // GEMMs (2 FLOPs per multiply-add each), except the first layer's grad-input, which
      // autograd skips because the images need no gradient.
      std::vector<int64_t> widths = {shape.numel()};
      for (auto h : config.model.hidden) widths.push_back(h);
      widths.push_back(config.model.type == "vae" ? 2 * config.model.latent_dim : config.model.latent_dim);
      std::vector<int64_t> dec = {config.model.latent_dim};
      for (auto it = config.model.hidden.rbegin(); it != config.model.hidden.rend(); ++it) dec.push_back(*it);
      dec.push_back(shape.numel());
      double flops = 0;
      for (size_t i = 0; i + 1 < widths.size(); ++i) flops += 2.0 * widths[i] * widths[i + 1] * (i == 0 ? 2 : 3);
      for (size_t i = 0; i + 1 < dec.size(); ++i) flops += 2.0 * dec[i] * dec[i + 1] * 3;
      const double gflops = flops * best / 1e9;
      out.add("model_gflops", gflops).add("fraction_of_gemm_peak", gflops / peak);
    }
    std::printf("%s\n", out.str().c_str());
    return 0;
  } catch (const pae::Error& e) {
    spdlog::error("{}", e.what());
    return pae::kUserErrorExit;
  }
}
