#include "pae/train/classifier_run.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

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
  const int64_t classes = std::max(train_set.labels.max().item<int64_t>(), test.labels.max().item<int64_t>()) + 1;
  require(classes >= 2, "domain classifier: " + config.data.name +
                            " has a single label; the classifier needs a labelled dataset (data.labels_path for npy)");

  auto engine_opts = engine_options(config, options.run_dir, device, options.resume, options.quiet);
  engine_opts.drop_singleton_batch = false;
  {
    models::Classifier probe(config.data.name, train_set.images.size(1), train_set.images.size(2),
                             train_set.images.size(3), classes);
    check_groups(engine_opts, probe);  // before anything is written
  }
  const RunDirectory held(options.run_dir, options.resume, options.force, "train.log");
  if (options.resume)
    reconcile_resume_config(options.run_dir, config);
  else
    atomic_write_text(run / "config.yml", to_yaml(config));
  seed_everything(t.seed);
  auto net = std::make_shared<models::Classifier>(config.data.name, train_set.images.size(1), train_set.images.size(2),
                                                  train_set.images.size(3), classes);
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
  const auto fit = Engine(engine_opts, run_sinks(options.run_dir, t.epochs, options.quiet)).fit(*net, data);

  const int64_t model_epoch = load_weights(options.run_dir, t.model_checkpoint, *net).epoch;
  ClassifierSummary summary{config.data.name, classes, net->accuracy(test.images, test.labels, t.eval_batch_size),
                            fit.state.epoch, model_epoch};
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
