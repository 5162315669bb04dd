// pae-bench: training throughput of the shipped models and the machine's GEMM peak.
//   pae-bench gemm            sgemm GFLOP/s (1024^3, rows split over the intra-op threads), and
//                             one thread's at the shapes of the MLPs' layers
//   pae-bench vae|ae [--epochs 1]   one Fashion-MNIST epoch of configs/fmnist_{vae,ae}.yml
//   pae-bench nsf|realnvp     flow fitting samples/s: 8 layers, 2x256 MLP conditioners, dim 32,
//                             batch 256, 8 bins, tail bound 3, reverse permutations
//   pae-bench toy             NSF on a 2-D ring; test log-likelihood vs the analytic density
//   pae-bench density [--dims 2,8,32] [--sets a,b] [--config FLOW.yml] [--set k=v]
//                             the config's flow fitted on each known-density set
//                             (pae/flows/density_sets.h): flow, Gaussian and true test
//                             log-likelihood, a JSON line each and runs/bench_density/results.md
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>
#if __has_include(<torch/csrc/autograd/profiler_legacy.h>)
#include <torch/csrc/autograd/profiler_legacy.h>
#define PAE_HAVE_RECORD_PROFILE 1
#endif
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "density.h"
#include "dnf_spiral.h"
#include "pae/config.h"
#include "pae/data/dataset.h"
#include "pae/flows/flow.h"
#include "pae/models/autoencoder.h"
#include "pae/nn/blas.h"
#include "pae/nn/dense.h"
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

/// GFLOP/s of `call` (`flop` each): one warm-up call, then the best of `rounds` rounds of `reps` calls.
template <typename Call>
double best_gflops(const Call& call, double flop, int64_t reps, int rounds) {
  call();
  double best = 0;
  for (int round = 0; round < rounds; ++round) {
    const double t0 = now();
    for (int64_t i = 0; i < reps; ++i) call();
    best = std::max(best, flop * double(reps) / (now() - t0) / 1e9);
  }
  return best;
}

/// The machine's GEMM peak as the models' layers reach it: a 1024^3 sgemm split by rows over the
/// intra-op threads (as pae::nn::dense splits a batch), each block one single-threaded call of the
/// routine the layers use (pae::nn::blas::gemm: oneDNN's sgemm, or the BLAS with PAE_SGEMM=blas).
/// Best of 5 rounds of 10 products.
double gemm_gflops(int64_t n = 1024) {
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  const int64_t rows = std::max<int64_t>(1, (n + at::get_num_threads() - 1) / at::get_num_threads());
  auto product = [&] {
    at::parallel_for(0, n, rows, [&](int64_t lo, int64_t hi) {
      pae::nn::blas::gemm(false, false, hi - lo, n, n, a.data_ptr<float>() + lo * n, n, b.data_ptr<float>(), n,
                          c.data_ptr<float>() + lo * n, n);
    });
  };
  return best_gflops(product, 2.0 * double(n) * n * n, 10, 5);
}

/// Single-threaded GFLOP/s of pae::nn::blas::gemm at the products the shipped MLPs run per thread
/// (half a batch of rows each): forward X W^T, grad-input G W and grad-weight G^T X over half the
/// output features, for RealNVP's and the NSF's conditioner layers (batch 256, 8 bins: 16 x 23
/// spline parameters) and the MLP VAE's (batch 128). Each the best of 3 rounds of >= 0.2 GFLOP,
/// after a warm-up call (oneDNN compiles its kernels on first use).
pae::JsonObject layer_gemm_gflops() {
  struct Layer {
    int64_t in, out, rows;
  };
  const Layer layers[] = {{16, 256, 128}, {256, 256, 128}, {256, 32, 128}, {256, 368, 128},
                          {784, 400, 64}, {400, 40, 64},   {20, 400, 64},  {400, 784, 64}};
  auto a = torch::randn({1 << 20}), b = torch::randn({1 << 20}), c = torch::zeros({1 << 20});
  const float *pa = a.data_ptr<float>(), *pb = b.data_ptr<float>();
  float* pc = c.data_ptr<float>();
  pae::JsonObject out;
  for (const auto& l : layers) {
    for (const char* pass : {"forward", "grad_input", "grad_weight"}) {
      const std::string p = pass;
      // (trans_a, trans_b, m, n, k, lda) as pae::nn::Dense's blocks call them; ldb = in throughout
      bool ta = false, tb = false;
      int64_t m = l.rows, n = l.in, k = l.out, lda = l.out;
      if (p == "forward") {
        tb = true, n = l.out, k = l.in, lda = l.in;
      } else if (p == "grad_weight") {
        ta = true, m = std::max<int64_t>(1, l.out / 2), k = 2 * l.rows;
      }
      auto call = [&] { pae::nn::blas::gemm(ta, tb, m, n, k, pa, lda, pb, l.in, pc, n, p == "forward"); };
      const double flop = 2.0 * double(m) * double(n) * double(k);
      const double best = best_gflops(call, flop, std::max<int64_t>(1, int64_t(2e8 / flop)), 3);
      out.add(std::to_string(l.in) + "->" + std::to_string(l.out) + " rows " + std::to_string(l.rows) + " " + p, best);
    }
  }
  return out;
}

/// Multiply-add FLOPs (2 per multiply-add) of the GEMM-like layers of a Sequential for one item
/// (`h`: a batch of one), walking its layers with a real input, as convolution costs depend on
/// the spatial sizes. `first` gets the first such layer's share (its grad-input is skipped when
/// the input needs no gradient).
double sequential_flops(torch::nn::SequentialImpl& seq, torch::Tensor h, double* first = nullptr) {
  torch::NoGradGuard no_grad;
  double total = 0;
  for (auto& m : seq) {
    auto out = m.forward(h);
    const auto* ptr = m.ptr().get();
    double f = 0;
    if (const auto* d = dynamic_cast<const pae::nn::DenseImpl*>(ptr)) {
      f = 2.0 * double(d->weight.numel());
    } else if (const auto* c = dynamic_cast<const torch::nn::Conv2dImpl*>(ptr)) {
      f = 2.0 * double(c->weight[0].numel()) * double(out.numel());  // Cin/groups * kh * kw per output
    } else if (const auto* t = dynamic_cast<const torch::nn::ConvTranspose2dImpl*>(ptr)) {
      f = 2.0 * double(t->weight[0].numel()) * double(h.numel());  // Cout/groups * kh * kw per input
    }
    if (f > 0 && first && total == 0) *first = f;
    total += f;
    h = out;
  }
  return total;
}

/// Training FLOPs per image of an auto-encoder with "encoder" and "decoder" Sequentials: forward,
/// grad-input and grad-weight products of every layer, less the first layer's grad-input (the
/// images need no gradient). 0 when the model has no such parts.
double autoencoder_training_flops(pae::models::AutoEncoder& model, const pae::models::ImageShape& s) {
  std::shared_ptr<torch::nn::SequentialImpl> enc, dec;
  for (const auto& item : model.named_children()) {
    if (item.key() == "encoder") enc = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(item.value());
    if (item.key() == "decoder") dec = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(item.value());
  }
  if (!enc || !dec) return 0;
  const bool was_training = model.is_training();
  model.eval();  // batch norm on a batch of one
  double first = 0;
  const double fe = sequential_flops(*enc, torch::zeros({1, s.channels, s.height, s.width}), &first);
  const double fd = sequential_flops(*dec, torch::zeros({1, model.latent_dim()}));
  model.train(was_training);
  return 3 * (fe + fd) - first;
}

/// Runs the engine (no run directory) for `epochs` epochs and returns the best epoch's rate.
/// With `profile`, the run is recorded by LibTorch's profiler as a Chrome trace.
double engine_rate(pae::nn::Trainable& trainable, const pae::train::TrainData& data,
                   const pae::train::OptimizerOptions& opt, int64_t epochs, int64_t batch, report::MemorySink& sink,
                   const std::string& profile = "", c10::Device device = c10::Device(c10::kCPU)) {
  pae::train::EngineOptions eo;
  eo.device = device;
  eo.epochs = std::max<int64_t>(epochs, 1);
  eo.batch_size = batch;
  eo.optimizers[""] = opt;
  eo.quiet = true;
  eo.drop_singleton_batch = false;
  eo.rate_key = "rate";
  auto memory = std::shared_ptr<report::MetricsSink>(&sink, [](report::MetricsSink*) {});
  {
#ifdef PAE_HAVE_RECORD_PROFILE
    std::unique_ptr<torch::autograd::profiler::RecordProfile> recorder;
    if (!profile.empty()) recorder = std::make_unique<torch::autograd::profiler::RecordProfile>(profile);
#else
    pae::require(profile.empty(), "--profile: this LibTorch has no legacy profiler (use perf)");
#endif
    pae::train::Engine(eo, {memory, std::make_shared<report::LogSink>(eo.epochs)}).fit(trainable, data);
  }
  double best = 0;
  for (const auto& r : sink.records) best = std::max(best, r.get("rate"));
  return best;
}

pae::train::TrainData tensor_data(const torch::Tensor& x) {
  pae::train::TrainData d;
  d.size = x.size(0);
  d.batch = [x](const torch::Tensor& idx) { return pae::nn::Batch{x.index_select(0, idx.to(x.device())), {}}; };
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

/// Training FLOPs per sample of a flow's conditioner GEMMs (3 products per Dense layer, less
/// the first coupling's input layer's grad-input: the data needs no gradient). The splines'
/// element-wise arithmetic is not counted.
double flow_training_flops(torch::nn::Module& flow) {
  double total = 0, first = 0;
  for (const auto& m : flow.modules(/*include_self=*/false))
    if (const auto* d = dynamic_cast<const pae::nn::DenseImpl*>(m.get())) {
      if (total == 0) first = 2.0 * double(d->weight.numel());
      total += 3 * 2.0 * double(d->weight.numel());
    }
  return total - first;
}

/// What one throughput benchmark measured: the best epoch's rate of each of `repeat` fresh runs.
struct Throughput {
  std::vector<double> rates;
  double flops_per_item = 0;  ///< 0: not counted for this model
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct BenchOptions {
  int64_t epochs = 1, limit = 0, repeat = 1;
  std::string config_path, profile;
  c10::Device device = c10::Device(c10::kCPU);  ///< the data stays there too (it fits)
};

/// Flow fitting throughput on correlated Gaussian data of dimension 32.
Throughput bench_flow(const std::string& type, const BenchOptions& bo, pae::JsonObject& out) {
  pae::flows::FlowOptions o;
  o.type = type;
  o.layers = 8;
  o.hidden = 256;
  o.hidden_layers = 2;
  o.bins = 8;
  o.tail_bound = 3;
  o.permutation = "reverse";
  const int64_t n = 51200, d = 32, bs = 256;
  Throughput t;
  double final_nll = 0;
  for (int64_t r = 0; r < bo.repeat; ++r) {
    torch::manual_seed(0);
    auto data = torch::matmul(torch::randn({n, d}), torch::randn({d, d}) / std::sqrt(double(d))).to(bo.device);
    FlowFit flow(pae::flows::build_flow(d, o));
    t.flops_per_item = flow_training_flops(flow);
    flow.to(bo.device);
    pae::train::OptimizerOptions opt;
    opt.lr = 1e-3;
    report::MemorySink sink;
    t.rates.push_back(
        engine_rate(flow, tensor_data(data), opt, bo.epochs, bs, sink, r == 0 ? bo.profile : "", bo.device));
    final_nll = sink.records.back().get("train_nll");
  }
  out.add("layers", int64_t(8)).add("hidden", int64_t(256)).add("dim", d).add("batch", bs);
  out.add("final_train_nll", final_nll);
  return t;
}

/// One Fashion-MNIST epoch (or `--limit` images) of an auto-encoder config.
Throughput bench_autoencoder(const std::string& what, const BenchOptions& bo, pae::JsonObject& out) {
  auto config = pae::load_config(bo.config_path.empty() ? "configs/fmnist_" + what + ".yml" : bo.config_path);
  config.data.val_size = 0;
  if (bo.limit > 0) config.data.subset = bo.limit;
  auto train = pae::data::load_dataset(config.data, pae::data::Split::kTrain);
  pae::models::ImageShape shape{train.images.size(1), train.images.size(2), train.images.size(3)};
  Throughput t;
  double final_loss = 0;
  for (int64_t r = 0; r < bo.repeat; ++r) {
    torch::manual_seed(0);
    auto model = pae::models::build_autoencoder(config.model, shape);
    t.flops_per_item = autoencoder_training_flops(*model, shape);
    model->to(bo.device);
    auto opt = pae::train::optimizer_options(config.train);
    opt.grad_clip = 0;
    report::MemorySink sink;
    t.rates.push_back(engine_rate(*model, tensor_data(train.images.to(bo.device)), opt, bo.epochs,
                                  config.train.batch_size, sink, r == 0 ? bo.profile : "", bo.device));
    final_loss = sink.records.back().get("train_loss");
  }
  out.add("batch", config.train.batch_size).add("images", train.images.size(0)).add("final_train_loss", final_loss);
  return t;
}

/// The last line of FILE (earlier pae-bench JSON lines) for `model`; read before the benchmark
/// runs, so that a bad file is an error before any result is printed.
nlohmann::json previous_figures(const std::string& file, const std::string& model) {
  std::ifstream in(file);
  pae::require(bool(in), "--compare " + file + ": cannot read the file");
  nlohmann::json before;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    pae::require(!j.is_discarded() && j.is_object(),
                 "--compare " + file + ":" + std::to_string(lineno) + ": not a JSON line of pae-bench");
    // Lines of pae-bench before issue 15 name a flow "flow" and its rate images_per_s / samples_per_s.
    const std::string name = j.contains("model") ? j.value("model", "") : j.value("flow", "");
    if (name != model) continue;
    before = j;
    for (const char* old_key : {"images_per_s", "samples_per_s"})
      if (before.contains(old_key) && !before.contains("per_s")) before["per_s"] = before[old_key];
  }
  pae::require(!before.is_null(), "--compare " + file + ": no earlier figures for model '" + model +
                                      "' (the file holds pae-bench's JSON lines)");
  return before;
}

/// Prints `before` beside the new figures, per number (on stderr: stdout keeps the JSON line).
void print_comparison(const nlohmann::json& before, const std::string& now_json) {
  const auto after = nlohmann::json::parse(now_json);
  std::fprintf(stderr, "%-24s %14s %14s %8s\n", "", "before", "now", "ratio");
  for (const auto& [key, value] : after.items()) {
    if (!value.is_number() || !before.contains(key) || !before[key].is_number()) continue;
    const double a = before[key].get<double>(), b = value.get<double>();
    std::fprintf(stderr, "%-24s %14.4g %14.4g %8s\n", key.c_str(), a, b,
                 a != 0 ? fmt::format("{:.3f}", b / a).c_str() : "-");
  }
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
  std::string what = "vae", compare;
  int threads = 0, blas_threads = 0;
  BenchOptions bo;
  app.add_option("what", what, "gemm | vae | ae | nsf | realnvp | toy | density | dnf-spiral")
      ->check(CLI::IsMember({"gemm", "vae", "ae", "nsf", "realnvp", "toy", "density", "dnf-spiral"}));
  app.add_option("--config", bo.config_path, "config (default configs/fmnist_<what>.yml)");
  app.add_option("--threads", threads, "LibTorch intra-op threads (0 = all cores)");
  app.add_option("--blas-threads", blas_threads, "OpenBLAS threads (0 = 1)");
  app.add_option("--epochs", bo.epochs, "epochs to time (a run's rate is its best epoch's)")
      ->check(CLI::PositiveNumber);
  app.add_option("--repeat", bo.repeat, "fresh runs (the median and the spread are reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--limit", bo.limit, "train on the first N images only (0 = all)");
  app.add_option("--profile", bo.profile, "write the first run's per-op profile (Chrome trace JSON) to this file");
  std::string device = "cpu";
  app.add_option("-d,--device", device, "vae | ae | nsf | realnvp: cpu | cuda | cuda:N (data and model there)");
  app.add_option("--compare", compare, "a file of earlier pae-bench JSON lines: print them beside the new figures");
  DensityBenchOptions dbo;
  std::string dims, sets;
  app.add_option("--dims", dims, "density: comma-separated dimensions (default 2,8,32)");
  app.add_option("--sets", sets, "density: comma-separated set names (default all)");
  app.add_option("--set", dbo.overrides, "density: override a key of the flow config");
  app.add_option("--work", dbo.work, "density, dnf-spiral: where the sets, fits and plots go");
  app.add_option("--n-train", dbo.n_train, "density: training points")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  pae::ensure_fast_blas_kernels(argc, argv);
  try {
    pae::warn_if_slow_blas();
    const auto ts = pae::configure_threads({threads, blas_threads});
    bo.device = pae::parse_device(device);
    if (!bo.profile.empty())
      pae::require(bool(std::ofstream(bo.profile)), "--profile " + bo.profile + ": cannot write the file");
    const auto before = compare.empty() ? nlohmann::json() : previous_figures(compare, what);
    if (what == "toy") return bench_toy(bo.epochs);
    if (what == "dnf-spiral")
      return bench_dnf_spiral(app.count("--epochs") > 0 ? bo.epochs : 100,
                              app.count("--work") > 0 ? dbo.work : "runs/bench_dnf_spiral");
    if (what == "density") {
      if (!bo.config_path.empty()) dbo.config = bo.config_path;
      if (!dims.empty()) dbo.dims.clear();
      for (const auto& d : pae::split_list(dims)) {
        pae::require(d.find_first_not_of("0123456789") == std::string::npos, "--dims: '" + d + "' is not a dimension");
        dbo.dims.push_back(std::stoll(d));
      }
      dbo.sets = pae::split_list(sets);
      return bench_density(dbo);
    }
    const double peak = gemm_gflops();
    pae::JsonObject out;
    out.add("model", what).add("device", bo.device.str()).add("threads", ts.intra_op).add("blas_threads", ts.blas);
    out.add("blas_core", pae::blas_info().core).add("sgemm", pae::nn::blas::sgemm_library()).add("gemm_gflops", peak);
    if (what == "gemm") out.add("layers_gflops_one_thread", layer_gemm_gflops());
    if (what != "gemm") {
      pae::JsonObject details;
      const auto t =
          what == "nsf" || what == "realnvp" ? bench_flow(what, bo, details) : bench_autoencoder(what, bo, details);
      const double rate = median(t.rates);
      out.add("per_s", rate)
          .add("per_s_min", *std::min_element(t.rates.begin(), t.rates.end()))
          .add("per_s_max", *std::max_element(t.rates.begin(), t.rates.end()))
          .add("runs", int64_t(t.rates.size()))
          .add("epochs", bo.epochs);
      if (t.flops_per_item > 0) {
        const double gflops = t.flops_per_item * rate / 1e9;
        out.add("mflop_per_item", t.flops_per_item / 1e6)
            .add("model_gflops", gflops)
            .add("fraction_of_gemm_peak", gflops / peak);
      }
      out.add("details", details);
    }
    const auto line = out.str();
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (!compare.empty()) print_comparison(before, line);
    return 0;
  } catch (const pae::Error& e) {
    spdlog::error("{}", e.what());
    return pae::kUserErrorExit;
  }
}
