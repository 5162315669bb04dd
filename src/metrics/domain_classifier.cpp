#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "pae/metrics/features.h"
#include "pae/train/checkpoint.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"
#include "pae/util/progress.h"
#include "pae/util/runtime.h"

namespace pae::metrics {

namespace {

/// conv 32 - pool - conv 64 - pool - fc 128 - fc classes.
class ClassifierNet : public torch::nn::Module {
 public:
  ClassifierNet(int64_t channels, int64_t height, int64_t width, int64_t classes) {
    conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, 32, 3).padding(1)));
    conv2_ = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)));
    fc1_ = register_module("fc1", torch::nn::Linear(64 * (height / 4) * (width / 4), 128));
    fc2_ = register_module("fc2", torch::nn::Linear(128, classes));
  }
  /// x -> 128-d features (before the last ReLU).
  torch::Tensor embed(const torch::Tensor& x) {
    auto h = torch::max_pool2d(torch::relu(conv1_(x)), 2);
    h = torch::max_pool2d(torch::relu(conv2_(h)), 2);
    return fc1_(h.flatten(1));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2_(torch::relu(embed(x))); }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear fc1_{nullptr}, fc2_{nullptr};
};

class DomainFeatures : public FeatureExtractor {
 public:
  DomainFeatures(std::shared_ptr<ClassifierNet> net, std::string what) : net_(std::move(net)), what_(std::move(what)) {}
  at::Tensor features(const at::Tensor& images) override {
    torch::NoGradGuard no_grad;
    net_->eval();
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < images.size(0); i += 500) parts.push_back(net_->embed(images.slice(0, i, i + 500)));
    return torch::cat(parts);
  }
  std::string describe() const override { return what_; }

 private:
  std::shared_ptr<ClassifierNet> net_;
  std::string what_;
};

/// Fraction of `d` classified right, in batches on the network's device.
double accuracy(ClassifierNet& net, const data::Dataset& d, int64_t batch = 500) {
  torch::NoGradGuard no_grad;
  net.eval();
  const auto device = net.parameters().front().device();
  int64_t right = 0;
  for (int64_t i = 0; i < d.size(); i += batch) {
    const auto x = d.images.slice(0, i, i + batch).to(device);
    right += net.forward(x).argmax(1).cpu().eq(d.labels.slice(0, i, i + batch)).sum().item<int64_t>();
  }
  return double(right) / double(d.size());
}

}  // namespace

namespace {

const char* kTrainHint = "train one with: pae-train --config configs/fmnist_classifier.yml --run-dir ";

std::string net_signature(const std::string& dataset, int64_t c, int64_t h, int64_t w) {
  return "classifier/" + dataset + "/" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
}

/// The test split the accuracy is measured on (the whole split, no class filter changes).
data::Dataset test_split(const data::DataOptions& options) {
  auto test = data::load_dataset(options, data::Split::kTest);
  require(test.size() > 0, "domain classifier: the test split of " + options.name + " is empty");
  return test;
}

std::shared_ptr<ClassifierNet> make_net(const data::Dataset& like, int64_t classes) {
  return std::make_shared<ClassifierNet>(like.images.size(1), like.images.size(2), like.images.size(3),
                                         std::max<int64_t>(classes, 2));
}

}  // namespace

DomainClassifierInfo train_domain_classifier(const Config& config, const train::RunOptions& options) {
  const auto& t = config.train;
  const fs::path run(options.run_dir);
  const auto device = parse_device(options.device.empty() ? t.device : options.device);
  require(!options.resume, "--resume: a classifier trains in one go; rerun with --force instead");
  auto train_set = data::load_dataset(config.data, data::Split::kTrain);
  require(train_set.size() > 0, "domain classifier: the training split of " + config.data.name + " is empty");
  const bool has_val = config.data.val_size > 0;
  const auto val = has_val ? data::load_dataset(config.data, data::Split::kVal) : data::Dataset{};
  const auto test = test_split(config.data);
  const int64_t classes = std::max(train_set.labels.max().item<int64_t>(), test.labels.max().item<int64_t>()) + 1;
  require(classes >= 2, "domain classifier: " + config.data.name +
                            " has a single label; the classifier needs a labelled dataset (data.labels_path for npy)");

  train::prepare_run_dir(options.run_dir, false, options.force);
  train::log_to_file((run / "train.log").string());
  atomic_write_text(run / "config.yml", to_yaml(config));
  seed_everything(t.seed);
  auto net = make_net(train_set, classes);
  net->to(device);
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(t.lr).weight_decay(t.weight_decay));
  const int64_t bs = t.batch_size, n = train_set.size();
  if (!options.quiet)
    spdlog::info("domain classifier on {}: {} training images, {} classes, {} epochs", config.data.name, n, classes,
                 t.epochs);
  for (int64_t e = 1; e <= t.epochs; ++e) {
    const double lr = train::scheduled_lr(t, e - 1);
    train::set_lr(opt, lr);
    net->train();
    auto perm = train::epoch_permutation(n, t.seed, e);
    Progress progress("classifier epoch " + std::to_string(e) + "/" + std::to_string(t.epochs), (n + bs - 1) / bs,
                      "img");
    double loss_sum = 0;
    for (int64_t i = 0; i < n; i += bs) {
      auto idx = perm.slice(0, i, std::min(i + bs, n));
      opt.zero_grad();
      auto loss = torch::cross_entropy_loss(net->forward(train_set.images.index_select(0, idx).to(device)),
                                            train_set.labels.index_select(0, idx).to(device));
      loss.backward();
      opt.step();
      const double l = loss.item<double>();
      require(std::isfinite(l), "domain classifier diverged at epoch " + std::to_string(e) + " (lower train.lr?)");
      loss_sum += l * double(idx.size(0));
      if (!options.quiet) progress.update(1, idx.size(0));
    }
    if (!options.quiet) progress.finish();
    JsonObject line;
    line.add("epoch", e).add("train_loss", loss_sum / double(n));
    if (has_val) line.add("val_accuracy", accuracy(*net, val, t.eval_batch_size));
    line.add("lr", lr).add("images_per_s", double(n) / std::max(progress.elapsed_seconds(), 1e-9));
    append_line(run / "metrics.jsonl", line.str());
    if (!options.quiet) spdlog::info("classifier epoch {}/{}: {}", e, t.epochs, line.str());
  }
  net->to(torch::kCPU);
  const DomainClassifierInfo info{config.data.name, accuracy(*net, test, t.eval_batch_size), t.epochs, 128};
  train::save_checkpoint((run / "classifier.pt").string(), *net, nullptr,
                         {t.epochs, 0, net_signature(config.data.name, train_set.images.size(1),
                                                     train_set.images.size(2), train_set.images.size(3))});
  atomic_write_text(run / "classifier.json", JsonObject()
                                                 .add("dataset", info.dataset)
                                                 .add("classes", classes)
                                                 .add("test_accuracy", info.test_accuracy)
                                                 .add("test_images", test.size())
                                                 .add("epochs", info.epochs)
                                                 .add("feature_dim", info.feature_dim)
                                                 .str() +
                                             "\n");
  if (!options.quiet)
    spdlog::info("domain classifier: test accuracy {:.4f} on {} {} test images; written to {}", info.test_accuracy,
                 test.size(), config.data.name, run.string());
  return info;
}

std::shared_ptr<FeatureExtractor> domain_classifier(const std::string& dir, DomainClassifierInfo* info, bool quiet) {
  const fs::path run(dir);
  const auto weights = run / "classifier.pt";
  require(fs::is_regular_file(weights) && fs::is_regular_file(run / "config.yml"),
          "domain classifier " + weights.string() + " not found; " + kTrainHint + dir);
  const Config config = load_config((run / "config.yml").string());
  const auto test = test_split(config.data);
  const std::string meta = read_text(run / "classifier.json");
  const auto at = meta.find("\"classes\": ");
  require(at != std::string::npos, (run / "classifier.json").string() + ": no \"classes\" entry; retrain it");
  auto net = make_net(test, std::stoll(meta.substr(at + 11)));
  const auto state = train::load_checkpoint(
      weights.string(), *net, nullptr,
      net_signature(config.data.name, test.images.size(1), test.images.size(2), test.images.size(3)));
  DomainClassifierInfo result{config.data.name, accuracy(*net, test), state.epoch, 128};
  if (!quiet) spdlog::info("domain classifier {}: test accuracy {:.4f}", weights.string(), result.test_accuracy);
  if (info) *info = result;
  char what[512];
  std::snprintf(what, sizeof(what),
                "domain classifier %s (%s, %lld epochs, test accuracy %.4f), 128-d penultimate features, pixels in [0, 1]",
                weights.string().c_str(), config.data.name.c_str(), static_cast<long long>(state.epoch),
                result.test_accuracy);
  return std::make_shared<DomainFeatures>(net, what);
}

}  // namespace pae::metrics
