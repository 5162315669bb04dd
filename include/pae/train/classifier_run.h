// Runs of the domain classifier (model.type: classifier) through the engine.
//
// A classifier run directory holds config.yml, train.log, metrics.jsonl (loss and validation
// accuracy per epoch), checkpoints/{last,best}.pt and classifier.json (dataset, classes, test
// accuracy of the run's model).
#pragma once
#include <string>

#include "pae/config.h"
#include "pae/train/trainer.h"

namespace pae::train {

struct ClassifierSummary {
  std::string dataset;
  int64_t classes = 0;
  double test_accuracy = 0;  ///< of the run's model (train.model_checkpoint)
  int64_t epochs = 0;        ///< epochs trained
  int64_t model_epoch = 0;   ///< epoch of the run's model
};

/// Trains the classifier of `config` (data section; train section) into options.run_dir.
/// Refuses an existing run unless options.force (or options.resume); a dataset with one
/// label is an error.
ClassifierSummary train_classifier(const Config& config, const RunOptions& options);

}  // namespace pae::train
