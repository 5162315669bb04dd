// pae-train: trains an auto-encoder-family model from a YAML config into a run directory.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include "command_line.h"
#include "pae/config.h"
#include "pae/nn/blas.h"
#include "pae/train/classifier_run.h"
#include "pae/train/distributed.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/runtime.h"

int main(int argc, char** argv) {
  pae::init_program();
  CLI::App app{
      "pae-train: train an auto-encoder (ae, vae) or the domain classifier of FID (classifier) from a YAML config"};
  std::string config_path, run_dir, device;
  std::vector<std::string> overrides;
  std::string seed;
  pae::train::RunOptions run;
  app.add_option("-c,--config", config_path, "YAML config (with --resume: defaults to RUN/config.yml)");
  app.add_option("-r,--run-dir", run_dir, "run directory (default: runs/<config name>)")
      ->check(CLI::Validator([](std::string& s) { return s.empty() ? std::string("an empty path") : ""; }, "DIR"));
  app.add_option("-d,--device", device, "cpu | cuda | cuda:N | auto (default: train.device)");
  app.add_flag("--resume", run.resume, "continue from RUN/checkpoints/last.pt");
  app.add_flag("--force", run.force, "replace an existing run directory");
  app.add_option("--seed", seed, "override train.seed");
  app.add_option("--set", overrides, "override a config key: --set train.epochs=3 (repeatable)");
  if (const int status = pae::programs::parse_command_line(app, argc, argv); status >= 0) return status;
  pae::ensure_fast_blas_kernels(argc, argv);
  pae::defer_stop_signals();  // SIGTERM, SIGINT: a checkpoint at the next step, then exit 143 or 130
  return pae::run_guarded([&]() -> int {
    pae::warn_if_slow_blas();
    pae::nn::blas::sgemm_library();  // a bad PAE_SGEMM is refused here, before any output
    if (config_path.empty()) {
      pae::require(run.resume && !run_dir.empty(), "--config is required (or --resume with --run-dir)");
      config_path = (pae::fs::path(run_dir) / "config.yml").string();
    }
    if (!seed.empty()) overrides.push_back("train.seed=" + seed);
    if (!device.empty()) overrides.push_back("train.device=" + device);
    if (run_dir.empty()) run_dir = (pae::fs::path("runs") / pae::fs::path(config_path).stem()).string();
    pae::Config config = pae::load_config(config_path, overrides);
    pae::require_sections(config, {"data", "model"}, "pae-train",
                          config.sections.count("flow") ? "a flow config? pae-flow takes it" : "");
    const auto threads = pae::configure_threads({int(config.train.threads), int(config.train.blas_threads)});
    spdlog::info("config {} -> run {}; threads: {} LibTorch, {} BLAS; float32 products on {}", config_path, run_dir,
                 threads.intra_op, threads.blas, pae::nn::blas::sgemm_library());
    run.run_dir = run_dir;
    run.device = config.train.device;
    run.ranks = pae::train::join_launched_ranks(run.device, run.quiet, config.train.distributed_backend,
                                                config.train.distributed_timeout_s);
    if (config.model.type == "classifier")
      pae::train::train_classifier(config, run);
    else
      pae::train::train_autoencoder(config, run);
    return 0;
  });
}
