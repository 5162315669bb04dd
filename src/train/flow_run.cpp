#include "pae/train/flow_run.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "pae/data/npy.h"
#include "pae/train/engine.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"
#include "pae/util/run_state.h"
#include "pae/util/runtime.h"

namespace pae::train {

LatentSources latents_of_run(const std::string& ae_run) {
  const fs::path dir = fs::path(ae_run) / "latents";
  require(fs::is_regular_file(dir / "train.npy"), "--ae-run " + ae_run + ": " + (dir / "train.npy").string() +
                                                      " not found (train the AE with pae-train first)");
  check_run_finished(ae_run, "latents' model", -1, false);  // a warning: latents of a run resumed and not finished
  LatentSources s;
  s.train = (dir / "train.npy").string();
  if (fs::is_regular_file(dir / "val.npy")) s.val = (dir / "val.npy").string();
  if (fs::is_regular_file(dir / "test.npy")) s.test = (dir / "test.npy").string();
  return s;
}

namespace {

torch::Tensor load_latents(const std::string& path, int64_t dim, const std::string& what) {
  auto z = data::read_npy(path);
  require(z.dim() == 2, path + ": expected latents [N,D], got rank " + std::to_string(z.dim()));
  require(z.size(0) > 0, path + ": the " + what + " latents are empty");
  require(dim < 0 || z.size(1) == dim, path + ": " + std::to_string(z.size(1)) + "-dimensional latents, expected " +
                                           std::to_string(dim) + " like the training latents");
  z = z.to(torch::kFloat64);
  require(torch::isfinite(z).all().item<bool>(), path + ": latents contain NaN or Inf");
  return z;
}

torch::Dtype flow_dtype(const TrainOptions& t) { return t.dtype == "float64" ? torch::kFloat64 : torch::kFloat32; }

}  // namespace

FlowFitSummary fit_latent_flow(const Config& config, const LatentSources& src, const RunOptions& options) {
  const auto& t = config.train;
  const torch::Dtype dtype = flow_dtype(t);
  const torch::Device device = parse_device(options.device.empty() ? t.device : options.device);
  auto train = load_latents(src.train, -1, "training");
  const int64_t d = train.size(1);
  require(train.size(0) >= 2, src.train + ": " + std::to_string(train.size(0)) +
                                  " training latent; a flow needs at least 2 (and many more to be of use)");
  {
    // A dimension without spread has an infinite density: log p(z) would be a large, meaningless number.
    const auto spread = train.std(0);
    std::string flat;
    for (int64_t j = 0; j < d; ++j)
      if (!(spread[j].item<double>() > 1e-6 * std::max(1.0, train.select(1, j).abs().max().item<double>())))
        flat += (flat.empty() ? "" : ", ") + std::to_string(j);
    require(flat.empty(), src.train + ": latent dimension(s) " + flat +
                              " are constant over the training latents (std 0); a density on them is infinite. "
                              "Check the auto-encoder (a collapsed latent) or leave those dimensions out");
  }
  torch::Tensor val = src.val.empty() ? torch::Tensor() : load_latents(src.val, d, "validation");
  torch::Tensor test = src.test.empty() ? torch::Tensor() : load_latents(src.test, d, "test");
  spdlog::info("latents: train {} x {}{}{}", train.size(0), d,
               val.defined() ? fmt::format(", val {}", val.size(0)) : "",
               test.defined() ? fmt::format(", test {}", test.size(0)) : "");

  const fs::path run(options.run_dir);
  auto engine_opts = engine_options(config, options.run_dir, device, options.resume, options.quiet);
  engine_opts.unit = "z";
  engine_opts.rate_key = "samples_per_s";
  engine_opts.drop_singleton_batch = false;
  const std::string checksum = flows::latent_checksum(train);
  if (options.resume && fs::exists(run / "latents.json")) {
    // The flow must continue on the latents it started on (and their standardisation).
    const auto recorded = nlohmann::json::parse(read_text(run / "latents.json"), nullptr, false);
    const std::string had = recorded.is_object() ? recorded.value("checksum", "") : "";
    require(had.empty() || had == checksum,
            "--resume " + options.run_dir + ": the training latents " + src.train + " (checksum " + checksum +
                ") are not the ones the flow started on (" + recorded.value("train", std::string("?")) + ", checksum " +
                had + "); resume with those latents (their --ae-run), or start a new flow run");
  }
  TrainingRun training(config, options, "flow.log", *std::make_shared<flows::LatentFlow>(d, config.flow), engine_opts);
  if (training.writes())
    atomic_write_text(
        run / "latents.json",
        JsonObject().add("train", fs::absolute(src.train).string()).add("dim", d).add("checksum", checksum).str() +
            "\n");

  auto flow = std::make_shared<flows::LatentFlow>(d, config.flow);
  flow->to(device, dtype);
  flow->fit_standardisation(train.slice(0, 0, std::min<int64_t>(train.size(0), 10000)).to(device, dtype));
  flow->set_training_noise(t.latent_noise_std);
  flow->set_dropout_schedule(t.epochs);
  int64_t n_params = 0;
  for (const auto& p : flow->parameters()) n_params += p.numel();
  spdlog::info("flow {} with {} layers, {} parameters on {}", flow->signature(), config.flow.layers, n_params,
               device.str());

  // The latents stay on the device (a few MB even for 60,000 64-dimensional ones): each batch is
  // one gather there, not a copy from host memory.
  const auto train_t = train.to(device, dtype);
  TrainData data;
  data.size = train.size(0);
  data.batch = [&](const torch::Tensor& idx) { return nn::Batch{train_t.index_select(0, idx.to(device)), {}}; };
  if (val.defined()) data.validation = {val.to(device), {}};
  const auto fit = training.fit(*flow, data, training.sinks(t.epochs));

  FlowFitSummary summary;
  summary.epochs = fit.state.epoch;
  summary.samples_per_second = fit.items_per_second;
  // Report with the run's model.
  summary.model_epoch = training.model_epoch();
  if (!training.writes()) return summary;  // rank 0 makes the outputs
  ensure_dir(run / "log_prob");
  JsonObject flow_lp, gauss_lp, typical;
  std::vector<std::pair<std::string, torch::Tensor>> splits = {{"train", train}};
  if (val.defined()) splits.emplace_back("val", val);
  if (test.defined()) splits.emplace_back("test", test);
  for (const auto& [name, z] : splits) {
    torch::Tensor lp;
    summary.mean_log_prob[name] = flow->mean_log_prob(z, &lp);
    summary.gaussian_log_prob[name] = flows::gaussian_mean_log_prob(train, z);
    data::write_npy((run / "log_prob" / (name + ".npy")).string(), lp);
    flow_lp.add(name, summary.mean_log_prob[name]);
    gauss_lp.add(name, summary.gaussian_log_prob[name]);
    summary.typical_set_fraction[name] = flows::typical_set_fraction(*flow, z);
    typical.add(name, summary.typical_set_fraction[name]);
    spdlog::info(
        "{}: mean log p(z) {:.3f} nats (full-covariance Gaussian {:.3f}); {:.3f} of the latents in the "
        "prior's 99% typical set",
        name, summary.mean_log_prob[name], summary.gaussian_log_prob[name], summary.typical_set_fraction[name]);
  }
  atomic_write_text(run / "summary.json",
                    JsonObject()
                            .add("epochs", summary.epochs)
                            .add("samples_per_s", summary.samples_per_second)
                            .add("flow", flow->signature())
                            .add("checkpoint", t.model_checkpoint)
                            .add("checkpoint_epoch", summary.model_epoch)
                            .add("mean_log_prob", flow_lp)
                            .add("gaussian_mean_log_prob", gauss_lp)
                            .add("typical_set_fraction", typical)
                            .add("typical_set", "|flow(z)|^2 within the central 99% of chi-square(D)")
                            .str() +
                        "\n");
  return summary;
}

std::shared_ptr<flows::LatentFlow> load_latent_flow(const std::string& flow_dir, Config* config_out,
                                                    const std::string& which, c10::Device device,
                                                    int64_t* model_epoch) {
  const fs::path dir(flow_dir);
  // Evaluation: a flow fitted under a key that has since changed meaning still loads.
  Config config = load_config((dir / "config.yml").string(), {}, RetiredKeys::ignore);
  const auto meta_path = (dir / "latents.json").string();
  int64_t d = 0;
  try {
    d = nlohmann::json::parse(read_text(meta_path)).at("dim").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(meta_path + ": expected a JSON object with an integer \"dim\" (" + e.what() + ")");
  }
  require(d > 0, meta_path + ": \"dim\" must be positive");
  auto flow = std::make_shared<flows::LatentFlow>(d, config.flow);
  flow->to(flow_dtype(config.train));
  const auto loaded = load_weights(flow_dir, which.empty() ? config.train.model_checkpoint : which, *flow);
  if (model_epoch) *model_epoch = loaded.epoch;
  flow->to(device);
  flow->eval();
  if (config_out) *config_out = config;
  return flow;
}

}  // namespace pae::train
