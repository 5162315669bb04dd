// Feature extractors for the Fréchet distance: a small classifier trained on the dataset
// itself ("domain FID") and pytorch-fid's Inception-v3 (2048-d pool features).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pae/config.h"
#include "pae/data/dataset.h"

namespace pae::eval {

/// images:[N,C,H,W] in [0,1] -> features:[N,F] (float32, CPU), batched, without gradients.
class FeatureExtractor {
 public:
  virtual ~FeatureExtractor() = default;
  virtual at::Tensor features(const at::Tensor& images) = 0;
  /// What was used, for reports: network, weights, preprocessing.
  virtual std::string describe() const = 0;
};

/// A small CNN classifier (2 conv blocks, 128-d penultimate layer) trained by pae-train
/// (`model.type: classifier`) on the labelled training split of its config's dataset; its 128-d
/// penultimate activations are the features. A classifier run directory holds config.yml,
/// train.log, metrics.jsonl (one line per epoch), classifier.pt and classifier.json.
struct DomainClassifierInfo {
  std::string dataset;
  double test_accuracy = 0;
  int64_t epochs = 0, feature_dim = 128;
};

/// Loads a classifier that pae-train wrote into `dir` and re-measures its test accuracy.
/// A missing or foreign directory is an error that says how to train one.
std::shared_ptr<FeatureExtractor> domain_classifier(const std::string& dir, DomainClassifierInfo* info = nullptr,
                                                    bool quiet = false);

/// Preprocessing of images before Inception (grey is always tiled to 3 channels, then bilinear
/// resize to 299x299 without corner alignment and scaling to [-1, 1], as pytorch-fid does).
enum class InceptionProtocol {
  kPlain,          ///< pixel values as they are
  kPerImageMinMax  ///< the PAE paper's: each image min-max normalised to [0, 1] first
};

/// pytorch-fid's FID Inception-v3 (weights pt_inception-2015-12-05, 1008 classes) up to the
/// 2048-d average pool. `weights` is a dict name -> tensor saved with torch.save (zip format;
/// scripts/fetch_inception.sh writes it) whose names are pytorch-fid's state-dict keys.
/// Errors name the file and the first missing or mis-shaped tensor.
std::shared_ptr<FeatureExtractor> inception_v3(const std::string& weights, InceptionProtocol protocol,
                                               int64_t batch = 50);

/// Names and shapes of every tensor the network reads from a weights file (parameters, then
/// batch-norm running statistics), in pytorch-fid's naming.
std::vector<std::pair<std::string, std::vector<int64_t>>> inception_v3_tensor_shapes();

}  // namespace pae::eval
