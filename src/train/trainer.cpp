#include "pae/train/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "pae/data/npy.h"
#include "pae/models/autoencoder.h"
#include "pae/models/nae.h"
#include "pae/report/tensorboard.h"
#include "pae/train/checkpoint.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/image.h"
#include "pae/util/json.h"
#include "pae/util/runtime.h"

namespace pae::train {

using models::AutoEncoder;

std::shared_ptr<models::AutoEncoder> load_autoencoder(const std::string& run_dir, Config* config_out,
                                                      const std::string& which, int64_t* model_epoch) {
  const fs::path dir(run_dir);
  require(fs::is_directory(dir), "auto-encoder run directory not found: " + run_dir);
  Config config = load_config((dir / "config.yml").string());
  // The image shape the run recorded (model.json); runs made before it existed derive it.
  models::ImageShape shape{0, 0, 0};
  if (fs::is_regular_file(dir / "model.json")) {
    const auto path = (dir / "model.json").string();
    try {
      const auto s = nlohmann::json::parse(read_text(path)).at("image_shape").get<std::vector<int64_t>>();
      require(s.size() == 3, path + ": image_shape must be [C, H, W]");
      shape = {s[0], s[1], s[2]};
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ": " + e.what());
    }
  } else {
    shape = models::known_image_shape(config.data);
    if (shape.channels == 0) {
      const auto test = data::load_dataset(config.data, data::Split::kTest);
      shape = {test.images.size(1), test.images.size(2), test.images.size(3)};
    }
  }
  auto model = models::build_autoencoder(config.model, shape);
  const auto loaded = load_weights(run_dir, which.empty() ? config.train.model_checkpoint : which, *model);
  if (model_epoch) *model_epoch = loaded.epoch;
  model->eval();
  if (config_out) *config_out = config;
  return model;
}

namespace {

torch::Tensor encode_all(AutoEncoder& model, const data::Dataset& d, int64_t batch, torch::Device device) {
  torch::NoGradGuard no_grad;
  model.eval();
  std::vector<torch::Tensor> zs;
  for (int64_t i = 0; i < d.size(); i += batch)
    zs.push_back(model.encode(d.images.slice(0, i, std::min(i + batch, d.size())).to(device)).to(torch::kCPU));
  return torch::cat(zs);
}

/// Writes a grid of the NAE's latest negative samples after each phase-2 epoch.
class NegativesSink : public report::MetricsSink {
 public:
  NegativesSink(models::NormalizedAE& model, fs::path dir) : model_(model), dir_(std::move(dir)) {}
  void on_epoch(const report::EpochRecord& r) override {
    const auto& neg = model_.last_negatives();
    if (r.phase != "nae" || !neg.defined()) return;
    ensure_dir(dir_);
    save_image_grid(neg.slice(0, 0, 64), 8, (dir_ / fmt::format("epoch_{:04d}.png", r.epoch)).string());
  }

 private:
  models::NormalizedAE& model_;
  fs::path dir_;
};

std::string format_terms(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& kv : m) s += (s.empty() ? "" : " ") + kv.first + "=" + fmt::format("{:.6g}", kv.second);
  return s;
}

}  // namespace

namespace {

/// TensorBoard pictures of an auto-encoder every `every` epochs and at the last: 8 held-out images
/// over their reconstructions, 16 prior samples, and histograms of the latents of up to 512
/// held-out images (all of them, and the first 4 dimensions).
class PictureSink : public report::MetricsSink {
 public:
  PictureSink(models::AutoEncoder& model, torch::Tensor images, std::shared_ptr<report::EventWriter> events,
              int64_t every, int64_t last, int64_t batch, torch::Device device)
      : model_(model),
        images_(images.slice(0, 0, std::min<int64_t>(512, images.size(0)))),
        events_(std::move(events)),
        every_(every),
        last_(last),
        batch_(batch),
        device_(device) {}
  void on_epoch(const report::EpochRecord& r) override {
    if (r.epoch % every_ != 0 && r.epoch != last_) return;
    torch::NoGradGuard no_grad;
    const bool was_training = model_.is_training();
    model_.eval();
    std::vector<torch::Tensor> zs;
    for (int64_t i = 0; i < images_.size(0); i += batch_)
      zs.push_back(model_.encode(images_.slice(0, i, std::min(i + batch_, images_.size(0))).to(device_)).cpu());
    const auto z = torch::cat(zs).to(torch::kDouble).contiguous();
    const auto x = images_.slice(0, 0, 8).to(device_);
    int64_t w = 0, h = 0;
    const auto pair = encode_png_grid(torch::cat({x, model_.reconstruct(x)}), 8, &w, &h);
    events_->image("reconstructions", pair, w, h, 3, r.epoch);
    const auto samples = encode_png_grid(model_.sample_prior(16), 8, &w, &h);
    events_->image("samples", samples, w, h, 3, r.epoch);
    const auto values = [](const torch::Tensor& t) {
      const auto c = t.contiguous();
      return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
    };
    events_->histogram("latents", values(z), r.epoch);
    for (int64_t d = 0; d < std::min<int64_t>(4, z.size(1)); ++d)
      events_->histogram("latent_" + std::to_string(d), values(z.select(1, d)), r.epoch);
    if (was_training) model_.train();
  }

 private:
  models::AutoEncoder& model_;
  torch::Tensor images_;
  std::shared_ptr<report::EventWriter> events_;
  int64_t every_, last_, batch_;
  torch::Device device_;
};

/// The trained auto-encoder against the simplest models there are: the training set's mean image
/// and, for a run of under kMinSteps optimizer steps (a smoke test may not have beaten the mean
/// yet), the mid-grey image an untrained decoder's sigmoid gives. A model that reconstructs test
/// images worse than 1.5 times that (or encodes them to non-finite latents) diverged or learned
/// nothing, and its latents and summary are not written as a success.
constexpr int64_t kMinSteps = 200;
void check_learned(models::AutoEncoder& model, const data::Dataset& train, const data::Dataset& test,
                   int64_t batch_size, torch::Device device, int64_t steps, const Config& config, const fs::path& run) {
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t n = std::min<int64_t>(test.size(), 2000);
  if (n == 0) return;
  const auto x = test.images.slice(0, 0, n).to(torch::kFloat);
  const auto mean = train.images.to(torch::kFloat).mean(0, true);
  const double baseline = (x - mean).pow(2).mean().item<double>();
  double sq = 0, z_max = 0;
  for (int64_t i = 0; i < n; i += batch_size) {
    const auto xb = x.slice(0, i, std::min(i + batch_size, n)).to(device);
    const auto z = model.encode(xb);
    sq += (model.decode(z) - xb).pow(2).sum().item<double>();
    z_max = std::max(z_max, z.abs().max().item<double>());
  }
  const double mse = sq / double(x.numel());
  const double grey = (x - 0.5).pow(2).mean().item<double>();  // an untrained decoder's output
  const bool short_run = steps < kMinSteps, finite = std::isfinite(mse) && std::isfinite(z_max);
  if (finite && mse <= 1.5 * baseline + 1e-4) return;
  const auto what = fmt::format(
      "the trained model reconstructs the first {} test images with MSE {:.4g}, worse than the training set's "
      "mean image does ({:.4g}){}, and encodes them to latents up to {:.3g} in magnitude",
      n, mse, baseline, short_run ? fmt::format(" and than an untrained decoder's grey image ({:.4g})", grey) : "",
      z_max);
  if (short_run && finite && mse <= 1.5 * grey + 1e-4) {  // no worse than before training: too short to tell
    spdlog::warn("{}, after only {} optimizer steps: train longer", what, steps);
    return;
  }
  throw Error(fmt::format(
      "divergence check: {} after {} optimizer steps: training diverged or learned nothing. Lower train.lr (now "
      "{:g}) and run again with --force, or set train.divergence_check: false to keep it; its checkpoints are in "
      "{}, its latents and summary.json were not written",
      what, steps, config.train.lr, (run / "checkpoints").string()));
}

/// recon.png (rows of 8 test images over their reconstructions) and samples.png.
void write_image_grids(AutoEncoder& model, const data::Dataset& test, const fs::path& run, int64_t num_samples,
                       torch::Device device) {
  torch::NoGradGuard no_grad;
  model.eval();
  const int64_t k = std::min<int64_t>(num_samples / 2 > 0 ? num_samples / 2 : 1, test.size());
  auto x = test.images.slice(0, 0, k).to(device);
  auto r = model.reconstruct(x);
  // Rows of 8 originals followed by their 8 reconstructions.
  std::vector<torch::Tensor> rows;
  for (int64_t i = 0; i < k; i += 8) {
    rows.push_back(x.slice(0, i, std::min(i + 8, k)));
    rows.push_back(r.slice(0, i, std::min(i + 8, k)));
  }
  save_image_grid(torch::cat(rows), 8, (run / "recon.png").string());
  save_image_grid(model.sample_prior(num_samples), 8, (run / "samples.png").string());
}

/// Vector data [N,1,1,D]: samples.npy ([num_samples, D]); for D = 2 and a family with a density
/// (the DNF), density.png, its log-density on a 256 x 256 grid over the test points' box (padded
/// by 10%; colour from 12 nats below the maximum to the maximum), with the grid's values in
/// density_grid.npy and its box in density_grid.json.
void write_vector_pictures(AutoEncoder& model, const data::Dataset& test, const fs::path& run, int64_t num_samples,
                           torch::Device device) {
  torch::NoGradGuard no_grad;
  model.eval();
  const auto samples = model.sample_prior(num_samples).cpu();
  data::write_npy((run / "samples.npy").string(), samples.flatten(1));
  const auto points = test.images.flatten(1);
  if (points.size(1) != 2 || points.size(0) == 0 || !model.log_density(points.slice(0, 0, 1).to(device)).defined())
    return;
  constexpr int64_t kSide = 256;
  const auto lo = std::get<0>(points.min(0)), hi = std::get<0>(points.max(0));
  const auto pad = 0.1 * (hi - lo);
  const auto x_axis = torch::linspace((lo[0] - pad[0]).item<double>(), (hi[0] + pad[0]).item<double>(), kSide);
  const auto y_axis = torch::linspace((hi[1] + pad[1]).item<double>(), (lo[1] - pad[1]).item<double>(), kSide);
  const auto mesh = torch::meshgrid({y_axis, x_axis}, "ij");
  const auto grid = torch::stack({mesh[1].reshape(-1), mesh[0].reshape(-1)}, 1).view({-1, 1, 1, 2});
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < grid.size(0); i += 4096)
    parts.push_back(model.log_density(grid.slice(0, i, std::min(i + 4096, grid.size(0))).to(device)).cpu());
  const auto log_p = torch::cat(parts).view({kSide, kSide});
  data::write_npy((run / "density_grid.npy").string(), log_p);
  atomic_write_text(run / "density_grid.json",
                    nlohmann::json{{"x", {x_axis[0].item<double>(), x_axis[-1].item<double>()}},
                                   {"y", {y_axis[0].item<double>(), y_axis[-1].item<double>()}},
                                   {"rows", "y from the top (largest) down"},
                                   {"values", "log p(x), nats"}}
                            .dump() +
                        "\n");
  const double top = torch::nan_to_num(log_p, -1e30, -1e30, -1e30).max().item<double>();
  const auto t = ((torch::nan_to_num(log_p, -1e30, top, -1e30) - (top - 12)) / 12).clamp(0, 1);
  const auto rgb = torch::stack({(3 * t).clamp(0, 1), (3 * t - 1).clamp(0, 1), (3 * t - 2).clamp(0, 1)}, 0);
  save_image_grid(rgb.unsqueeze(0), 1, (run / "density.png").string());
}

/// Data given as vectors (an .npy of [N, D], the thin spiral): [N, 1, 1, D].
bool is_vector_data(const models::ImageShape& shape) { return shape.channels == 1 && shape.height == 1; }

}  // namespace

TrainSummary train_autoencoder(const Config& config, const RunOptions& options) {
  const auto& t = config.train;
  const fs::path run(options.run_dir);
  const torch::Device device = parse_device(options.device.empty() ? t.device : options.device);

  // Data first: a missing dataset must fail before anything is written.
  spdlog::info("loading dataset '{}'", config.data.name);
  const data::Dataset train = data::load_dataset(config.data, data::Split::kTrain);
  const bool has_val = config.data.val_size > 0;
  const data::Dataset val = has_val ? data::load_dataset(config.data, data::Split::kVal) : data::Dataset{};
  const data::Dataset test = data::load_dataset(config.data, data::Split::kTest);
  spdlog::info("train {} / val {} / test {} images of shape [{}, {}, {}]", train.size(), val.size(), test.size(),
               train.images.size(1), train.images.size(2), train.images.size(3));
  if (config.data.train_from == "test")
    spdlog::warn(
        "data.train_from: test: training and validation images are carved from the test split, so the "
        "test metrics below are not held out");

  const models::ImageShape shape{train.images.size(1), train.images.size(2), train.images.size(3)};
  TrainingRun training(config, options, "train.log", *models::build_autoencoder(config.model, shape),
                       engine_options(config, options.run_dir, device, options.resume, options.quiet));
  auto model = models::build_autoencoder(config.model, shape);
  model->to(device);
  int64_t n_params = 0;
  for (const auto& p : model->parameters()) n_params += p.numel();
  spdlog::info("model {} ({} parameters) on {}", model->signature(), n_params, device.str());
  // What later programs need to rebuild the model without re-deriving it from the dataset.
  if (training.writes())
    atomic_write_text(run / "model.json", nlohmann::json{{"signature", model->signature()},
                                                         {"image_shape", shape.sizes()},
                                                         {"latent_dim", model->latent_dim()},
                                                         {"checkpoint", t.model_checkpoint}}
                                                  .dump() +
                                              "\n");

  TrainData data;
  data.size = train.size();
  data.batch = [&](const torch::Tensor& idx) {
    return nn::Batch{data::augment(train.images.index_select(0, idx), config.data).to(device),
                     train.labels.index_select(0, idx).to(device)};
  };
  if (has_val) data.validation = {val.images, val.labels};
  data.eval_batch_size = t.eval_batch_size;
  int64_t total_epochs = 0;  // over all the model's phases (the NAE has two)
  for (const auto& phase : model->phases(t.epochs)) total_epochs += phase.epochs;
  std::shared_ptr<report::EventWriter> events;
  auto sinks = training.sinks(total_epochs, &events);
  if (training.writes() && !is_vector_data(shape)) {
    sinks.push_back(std::make_shared<PictureSink>(*model, val.size() > 0 ? val.images : test.images, events,
                                                  std::max<int64_t>(1, total_epochs / 10), total_epochs,
                                                  t.eval_batch_size, device));
    if (auto* nae = dynamic_cast<models::NormalizedAE*>(model.get()))
      sinks.push_back(std::make_shared<NegativesSink>(*nae, run / "negatives"));
  }
  const auto fit = training.fit(*model, data, sinks);

  // Every output below comes from the run's model, the checkpoint later programs load.
  TrainSummary summary;
  summary.epochs_completed = fit.state.epoch;
  summary.images_per_second = fit.items_per_second;
  summary.model_epoch = training.model_epoch();
  if (!training.writes()) return summary;  // rank 0 makes the outputs
  summary.test_metrics = model->evaluate(test.images, t.eval_batch_size);
  spdlog::info("test ({} model, epoch {}): {}", t.model_checkpoint, summary.model_epoch,
               format_terms(summary.test_metrics));
  if (t.divergence_check)
    check_learned(*model, train, test, t.eval_batch_size, device, fit.state.global_step, config, run);
  if (is_vector_data(shape))
    write_vector_pictures(*model, test, run, t.num_samples, device);
  else
    write_image_grids(*model, test, run, t.num_samples, device);
  if (t.save_latents) {
    ensure_dir(run / "latents");
    std::vector<const data::Dataset*> splits = {&train, &test};
    if (has_val) splits.insert(splits.begin() + 1, &val);
    for (const auto* d : splits) {
      const std::string name = data::to_string(d->split);
      data::write_npy((run / "latents" / (name + ".npy")).string(), encode_all(*model, *d, t.eval_batch_size, device));
      data::write_npy((run / "latents" / (name + "_labels.npy")).string(), d->labels);
    }
  }
  JsonObject test_json;
  for (const auto& kv : summary.test_metrics) test_json.add(kv.first, kv.second);
  JsonObject s;
  s.add("epochs", summary.epochs_completed)
      .add("images_per_s", summary.images_per_second)
      .add("model", model->signature())
      .add("checkpoint", t.model_checkpoint)
      .add("checkpoint_epoch", summary.model_epoch)
      .add("test", test_json);
  atomic_write_text(run / "summary.json", s.str() + "\n");
  spdlog::info("run written to {}", run.string());
  return summary;
}

}  // namespace pae::train
