#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "pae/metrics/features.h"
#include "pae/train/checkpoint.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"
#include "pae/util/progress.h"

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

double accuracy(ClassifierNet& net, const data::Dataset& d) {
  torch::NoGradGuard no_grad;
  net.eval();
  int64_t right = 0;
  for (int64_t i = 0; i < d.size(); i += 500)
    right +=
        net.forward(d.images.slice(0, i, i + 500)).argmax(1).eq(d.labels.slice(0, i, i + 500)).sum().item<int64_t>();
  return double(right) / double(d.size());
}

}  // namespace

std::shared_ptr<FeatureExtractor> domain_classifier(const data::DataOptions& data_options, const std::string& dir,
                                                    int64_t epochs, DomainClassifierInfo* info, bool quiet) {
  data::DataOptions o = data_options;
  o.val_size = 0;  // the whole training split; accuracy is measured on the test split
  o.subset = 0;
  auto test = data::load_dataset(o, data::Split::kTest);
  const int64_t classes = test.labels.max().item<int64_t>() + 1;
  const int64_t c = test.images.size(1), h = test.images.size(2), w = test.images.size(3);
  auto net = std::make_shared<ClassifierNet>(c, h, w, std::max<int64_t>(classes, 10));
  const std::string signature =
      "classifier/" + o.name + "/" + std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w);
  const auto weights = fs::path(dir) / "classifier.pt";
  DomainClassifierInfo result{o.name, 0, epochs, 128};
  if (fs::exists(weights)) {
    train::load_checkpoint(weights.string(), *net, nullptr, signature);
    result.test_accuracy = accuracy(*net, test);
    if (!quiet)
      spdlog::info("domain classifier {} (cached): test accuracy {:.4f}", weights.string(), result.test_accuracy);
  } else {
    auto train_set = data::load_dataset(o, data::Split::kTrain);
    require(train_set.size() > 0, "domain classifier: the training split of " + o.name + " is empty");
    torch::manual_seed(0);
    torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
    const int64_t bs = 128, n = train_set.size();
    for (int64_t e = 0; e < epochs; ++e) {
      net->train();
      auto perm = train::epoch_permutation(n, 0, e);
      Progress progress("classifier epoch " + std::to_string(e + 1) + "/" + std::to_string(epochs), (n + bs - 1) / bs,
                        "img");
      for (int64_t i = 0; i < n; i += bs) {
        auto idx = perm.slice(0, i, std::min(i + bs, n));
        opt.zero_grad();
        auto loss = torch::cross_entropy_loss(net->forward(train_set.images.index_select(0, idx)),
                                              train_set.labels.index_select(0, idx));
        loss.backward();
        opt.step();
        if (!quiet) progress.update(1, idx.size(0));
      }
      if (!quiet) progress.finish();
    }
    result.test_accuracy = accuracy(*net, test);
    ensure_dir(dir);
    train::save_checkpoint(weights.string(), *net, nullptr, {epochs, 0, signature});
    atomic_write_text(fs::path(dir) / "classifier.json", JsonObject()
                                                                 .add("dataset", o.name)
                                                                 .add("test_accuracy", result.test_accuracy)
                                                                 .add("epochs", epochs)
                                                                 .add("feature_dim", int64_t(128))
                                                                 .str() +
                                                             "\n");
    if (!quiet)
      spdlog::info("domain classifier trained on {} ({} epochs): test accuracy {:.4f}, saved to {}", o.name, epochs,
                   result.test_accuracy, weights.string());
  }
  if (info) *info = result;
  char what[256];
  std::snprintf(what, sizeof(what),
                "domain classifier %s (%s, test accuracy %.4f), 128-d penultimate features, pixels in [0, 1]",
                weights.string().c_str(), o.name.c_str(), result.test_accuracy);
  return std::make_shared<DomainFeatures>(net, what);
}

}  // namespace pae::metrics
