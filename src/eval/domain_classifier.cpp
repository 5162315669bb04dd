#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "pae/eval/features.h"
#include "pae/models/classifier.h"
#include "pae/train/engine.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::eval {

namespace {

class DomainFeatures : public FeatureExtractor {
 public:
  DomainFeatures(std::shared_ptr<models::Classifier> net, std::string what)
      : net_(std::move(net)), what_(std::move(what)) {}
  at::Tensor features(const at::Tensor& images) override {
    torch::NoGradGuard no_grad;
    net_->eval();
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < images.size(0); i += 500) parts.push_back(net_->embed(images.slice(0, i, i + 500)));
    return torch::cat(parts);
  }
  std::string describe() const override { return what_; }

 private:
  std::shared_ptr<models::Classifier> net_;
  std::string what_;
};

}  // namespace

namespace {

const char* kTrainHint = "train one with: pae-train --config configs/fmnist_classifier.yml --run-dir ";

/// The test split the accuracy is measured on (the whole split, no class filter changes).
data::Dataset test_split(const data::DataOptions& options) {
  auto test = data::load_dataset(options, data::Split::kTest);
  require(test.size() > 0, "domain classifier: the test split of " + options.name + " is empty");
  return test;
}

}  // namespace

std::shared_ptr<FeatureExtractor> domain_classifier(const std::string& dir, DomainClassifierInfo* info, bool quiet) {
  const fs::path run(dir);
  require(fs::is_regular_file(run / "classifier.json") && fs::is_regular_file(run / "config.yml"),
          "domain classifier " + (run / "classifier.json").string() + " not found; " + kTrainHint + dir);
  const Config config = load_config((run / "config.yml").string());
  auto weights = fs::path(train::checkpoint_path(dir, config.train.model_checkpoint));
  const auto test = test_split(config.data);
  int64_t classes = 0;
  try {
    classes = nlohmann::json::parse(read_text(run / "classifier.json")).at("classes").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error((run / "classifier.json").string() + ": no integer \"classes\" entry (" + e.what() + "); retrain it");
  }
  auto net = std::make_shared<models::Classifier>(config.data.name, test.images.size(1), test.images.size(2),
                                                  test.images.size(3), classes);
  // Classifier runs made before the engine kept one weights file, classifier.pt.
  const bool legacy = !fs::exists(weights) && fs::is_regular_file(run / "classifier.pt");
  const auto state = legacy ? train::load_checkpoint((run / "classifier.pt").string(), *net, {}, net->signature())
                            : train::load_weights(dir, config.train.model_checkpoint, *net);
  if (legacy) weights = run / "classifier.pt";
  DomainClassifierInfo result{config.data.name, net->accuracy(test.images, test.labels), state.epoch, 128};
  if (!quiet) spdlog::info("domain classifier {}: test accuracy {:.4f}", weights.string(), result.test_accuracy);
  if (info) *info = result;
  char what[512];
  std::snprintf(
      what, sizeof(what),
      "domain classifier %s (%s, %lld epochs, test accuracy %.4f), 128-d penultimate features, pixels in [0, 1]",
      weights.string().c_str(), config.data.name.c_str(), static_cast<long long>(state.epoch), result.test_accuracy);
  return std::make_shared<DomainFeatures>(net, what);
}

}  // namespace pae::eval
