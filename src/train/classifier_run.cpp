#include "pae/train/classifier_run.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cmath>

#include "pae/data/dataset.h"
#include "pae/models/classifier.h"
#include "pae/train/engine.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"
#include "pae/util/runtime.h"

namespace pae::train {

ClassifierSummary train_classifier(const Config& config, const RunOptions& options) {
  const auto& t = config.train;
  const fs::path run(options.run_dir);
  const auto device = parse_device(options.device.empty() ? t.device : options.device);
  const auto train_set = data::load_dataset(config.data, data::Split::kTrain);
  require(train_set.size() > 0, "domain classifier: the training split of " + config.data.name + " is empty");
  const bool has_val = config.data.val_size > 0;
  const auto val = has_val ? data::load_dataset(config.data, data::Split::kVal) : data::Dataset{};
  const auto test = data::load_dataset(config.data, data::Split::kTest);
  require(test.size() > 0, "domain classifier: the test split of " + config.data.name + " is empty");
  // Classes are the labels the training split has, 0 .. K-1, each present: a stray label (200
  // among 0..9) would make a 201-class classifier that scores 1.0 on validation and 0.0 on test.
  const std::string labels_of = config.data.labels_path.empty() ? config.data.name : config.data.labels_path;
  const auto seen = std::get<0>(at::_unique(train_set.labels));
  const int64_t classes = seen.numel();
  require(seen.min().item<int64_t>() == 0 && seen.max().item<int64_t>() == classes - 1,
          "domain classifier: the training labels of " + labels_of + " are not 0.." + std::to_string(classes - 1) +
              " each present (" + std::to_string(classes) + " distinct labels from " +
              std::to_string(seen.min().item<int64_t>()) + " to " + std::to_string(seen.max().item<int64_t>()) +
              "); relabel them");
  for (const auto* split : {&val, &test})
    if (split->size() > 0)
      require(split->labels.min().item<int64_t>() >= 0 && split->labels.max().item<int64_t>() < classes,
              "domain classifier: a label of the " + std::string(split == &val ? "validation" : "test") + " split of " +
                  labels_of + " is outside the training labels 0.." + std::to_string(classes - 1));
  require(classes >= 2, "domain classifier: " + config.data.name +
                            " has a single label; the classifier needs a labelled dataset (data.labels_path for npy)");

  auto engine_opts = engine_options(config, options.run_dir, device, options.resume, options.quiet);
  engine_opts.drop_singleton_batch = false;
  const auto build = [&] {
    return std::make_shared<models::Classifier>(config.data.name, train_set.images.size(1), train_set.images.size(2),
                                                train_set.images.size(3), classes);
  };
  TrainingRun training(config, options, "train.log", *build(), engine_opts);
  auto net = build();
  net->to(device);
  if (!options.quiet)
    spdlog::info("domain classifier on {}: {} training images, {} classes, {} epochs", config.data.name,
                 train_set.size(), classes, t.epochs);
  TrainData data;
  data.size = train_set.size();
  data.batch = [&](const torch::Tensor& idx) {
    return nn::Batch{train_set.images.index_select(0, idx).to(device),
                     train_set.labels.index_select(0, idx).to(device)};
  };
  if (has_val) data.validation = {val.images, val.labels};
  data.eval_batch_size = t.eval_batch_size;
  const auto fit = training.fit(*net, data, training.sinks(t.epochs));
  const int64_t model_epoch = training.model_epoch();
  if (!training.writes()) return {config.data.name, classes, 0.0, fit.state.epoch, model_epoch};
  ClassifierSummary summary{config.data.name, classes, net->accuracy(test.images, test.labels, t.eval_batch_size),
                            fit.state.epoch, model_epoch};
  // After 200 optimizer steps (a smoke test has fewer), against the simplest classifiers there
  // are: the uniform guess (cross-entropy ln K) and always the test split's most frequent label.
  if (t.divergence_check && test.size() > 0 && fit.state.global_step >= 200) {
    const double majority = double(torch::bincount(test.labels).max().item<int64_t>()) / double(test.size());
    const double train_loss = fit.last.get("train_loss"), uniform = std::log(double(classes));
    require(summary.test_accuracy > majority && !(train_loss > uniform),
            fmt::format("divergence check: the trained classifier has test accuracy {:.4f} (always answering the most "
                        "frequent label: {:.4f}) and a last-epoch training loss of {:.4g} (the uniform guess: {:.4g}) "
                        "after {} optimizer steps: training diverged or learned nothing. Lower train.lr (now {:g}) "
                        "and run again with --force, or set train.divergence_check: false to keep it; its "
                        "checkpoints are in {}",
                        summary.test_accuracy, majority, train_loss, uniform, fit.state.global_step, t.lr,
                        (run / "checkpoints").string()));
  }
  atomic_write_text(run / "classifier.json", JsonObject()
                                                     .add("dataset", summary.dataset)
                                                     .add("classes", classes)
                                                     .add("test_accuracy", summary.test_accuracy)
                                                     .add("test_images", test.size())
                                                     .add("epochs", summary.epochs)
                                                     .add("checkpoint_epoch", summary.model_epoch)
                                                     .add("checkpoint", t.model_checkpoint)
                                                     .add("feature_dim", int64_t(128))
                                                     .str() +
                                                 "\n");
  if (!options.quiet)
    spdlog::info("domain classifier: test accuracy {:.4f} on {} {} test images; written to {}", summary.test_accuracy,
                 test.size(), config.data.name, run.string());
  return summary;
}

}  // namespace pae::train
