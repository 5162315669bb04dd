// pae-flow: fits a normalizing flow on an auto-encoder's latents (the PAE's second stage),
// samples through the whole PAE and interpolates in the flow's Gaussian space.
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>

#include "command_line.h"
#include "pae/config.h"
#include "pae/data/dataset.h"
#include "pae/data/npy.h"
#include "pae/eval/pae.h"
#include "pae/nn/blas.h"
#include "pae/train/distributed.h"
#include "pae/train/flow_run.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/image.h"
#include "pae/util/runtime.h"

int main(int argc, char** argv) {
  pae::ensure_fast_blas_kernels(argc, argv);
  pae::defer_stop_signals();  // SIGTERM, SIGINT: a checkpoint at the next step, then exit 143 or 130
  pae::init_program();
  CLI::App app{"pae-flow: fit a normalizing flow on auto-encoder latents; sample and interpolate through the PAE"};
  app.require_subcommand(0, 1);
  // fit (the default, no subcommand)
  std::string config_path, latents, val_latents, test_latents, ae_run, run_dir, device;
  std::vector<std::string> overrides;
  pae::train::RunOptions run;
  app.add_option("-c,--config", config_path, "flow config (flow + train sections)");
  app.add_option("--latents", latents, "training latents .npy [N,D]");
  app.add_option("--val-latents", val_latents, "validation latents (early stopping)");
  app.add_option("--test-latents", test_latents, "test latents (reported)");
  app.add_option("--ae-run", ae_run, "auto-encoder run: use its latents/{train,val,test}.npy");
  app.add_option("-r,--run-dir", run_dir, "flow run directory (default: <ae-run>/flow_<config name>)")
      ->check(CLI::Validator([](std::string& s) { return s.empty() ? std::string("an empty path") : ""; }, "DIR"));
  app.add_option("-d,--device", device, "cpu | cuda | cuda:N | auto (default: train.device)");
  app.add_flag("--resume", run.resume, "continue from RUN/checkpoints/last.pt");
  app.add_flag("--force", run.force, "replace an existing flow run");
  app.add_option("--set", overrides, "override a config key, e.g. --set train.epochs=3");

  std::string s_ae, s_flow, s_out, s_device;
  int64_t s_n = 64;
  double s_temperature = 1.0;
  auto* sample =
      app.add_subcommand("sample", "PAE samples: noise -> flow -> decoder (PNG grid, images and latents as .npy)");
  sample->add_option("--ae-run", s_ae, "auto-encoder run directory")->required();
  sample->add_option("--flow", s_flow, "flow run directory")->required();
  sample->add_option("--n", s_n, "number of samples")->check(CLI::Range(int64_t(1), int64_t(100000)));
  sample->add_option("--temperature", s_temperature, "scale of the base noise")->check(CLI::Range(0.0, 10.0));
  sample->add_option("-o,--out", s_out, "output prefix (default: FLOW/samples_T<temperature>)");
  const char* device_help =
      "cpu | cuda | cuda:N | auto (default: the AE run's train.device; the CPU where that GPU "
      "is absent)";
  sample->add_option("-d,--device", s_device, device_help);

  std::string i_ae, i_flow, i_out;
  int64_t i_a = 0, i_b = 1, i_steps = 10;
  auto* interp =
      app.add_subcommand("interpolate", "interpolate two test images in the flow's Gaussian space (PNG strip)");
  interp->add_option("--ae-run", i_ae, "auto-encoder run directory")->required();
  interp->add_option("--flow", i_flow, "flow run directory")->required();
  interp->add_option("--a", i_a, "index of the first test image");
  interp->add_option("--b", i_b, "index of the second test image");
  interp->add_option("--steps", i_steps, "images in the strip")->check(CLI::Range(int64_t(2), int64_t(100)));
  interp->add_option("-o,--out", i_out, "output PNG (default: FLOW/interpolation_<a>_<b>.png)");
  interp->add_option("-d,--device", s_device, device_help);
  if (const int status = pae::programs::parse_command_line(app, argc, argv); status >= 0) return status;
  return pae::run_guarded([&]() -> int {
    pae::warn_if_slow_blas();
    pae::nn::blas::sgemm_library();  // a bad PAE_SGEMM is refused here, before any output
    if (*sample || *interp) {
      pae::configure_threads({});
      auto pae = pae::eval::Pae::load(*sample ? s_ae : i_ae, *sample ? s_flow : i_flow, "", s_device);
      if (*sample) {
        torch::manual_seed(0);
        auto z = pae.sample_latents(s_n, s_temperature);
        auto x = pae.decode(z);
        if (s_out.empty()) s_out = (pae::fs::path(s_flow) / fmt::format("samples_T{}", s_temperature)).string();
        pae::save_image_grid(x, 8, s_out + ".png");
        pae::data::write_npy(s_out + ".npy", x);
        pae::data::write_npy(s_out + "_latents.npy", z);
        pae::save_image_grid(pae.sample_prior(s_n), 8, s_out + "_prior.png");
        spdlog::info(
            "wrote {0}.png, {0}.npy (PAE samples), {0}_latents.npy (their latents) and {0}_prior.png (decoded N(0, I) "
            "codes)",
            s_out);
      } else {
        auto test = pae::data::load_dataset(pae.config().data, pae::data::Split::kTest);
        pae::require(i_a >= 0 && i_a < test.size() && i_b >= 0 && i_b < test.size(),
                     "--a/--b: test image indices must lie in [0, " + std::to_string(test.size()) + ")");
        auto strip = pae.interpolate(test.images[i_a], test.images[i_b], i_steps);
        strip = torch::cat({test.images.slice(0, i_a, i_a + 1), strip, test.images.slice(0, i_b, i_b + 1)});
        if (i_out.empty()) i_out = (pae::fs::path(i_flow) / fmt::format("interpolation_{}_{}.png", i_a, i_b)).string();
        pae::save_image_grid(strip, strip.size(0), i_out);
        spdlog::info("wrote {} (test image {}, {} steps in the flow's Gaussian space, test image {})", i_out, i_a,
                     i_steps, i_b);
      }
      return 0;
    }
    pae::require(!config_path.empty() || (run.resume && !run_dir.empty()),
                 "--config is required (or --resume with --run-dir)");
    if (config_path.empty()) config_path = (pae::fs::path(run_dir) / "config.yml").string();
    pae::require(!latents.empty() || !ae_run.empty(), "give --latents FILE or --ae-run RUN");
    pae::require(latents.empty() || ae_run.empty(), "give --latents or --ae-run, not both");
    pae::train::LatentSources src;
    if (!ae_run.empty()) {
      src = pae::train::latents_of_run(ae_run);
    } else {
      src = {latents, val_latents, test_latents};
    }
    if (!device.empty()) overrides.push_back("train.device=" + device);
    pae::Config config = pae::load_config(config_path, overrides);
    pae::require_sections(config, {"flow"}, "pae-flow",
                          config.sections.count("model") ? "an auto-encoder config? pae-train takes it" : "");
    if (run_dir.empty()) {
      const auto base = ae_run.empty() ? pae::fs::path("runs") : pae::fs::path(ae_run);
      run_dir = (base / ("flow_" + pae::fs::path(config_path).stem().string())).string();
    }
    const auto threads = pae::configure_threads({int(config.train.threads), int(config.train.blas_threads)});
    spdlog::info("config {} -> flow run {}; threads: {} LibTorch, {} BLAS; float32 products on {}", config_path,
                 run_dir, threads.intra_op, threads.blas, pae::nn::blas::sgemm_library());
    run.run_dir = run_dir;
    run.device = config.train.device;
    run.ranks = pae::train::join_launched_ranks(run.device, run.quiet, config.train.distributed_backend,
                                                config.train.distributed_timeout_s);
    pae::train::fit_latent_flow(config, src, run);
    return 0;
  });
}
