// Datasets as tensors, named through an explicit registry.
//
// Every dataset is images:[N,C,H,W] float32 in [0,1] plus labels:[N] int64, on the CPU; vector
// data (an .npy of [N,D], the thin spiral) come as [N,1,1,D] with any real values.
// Roots resolve from the config, then $PAE_DATA_DIR/<name>, then ./data/<name>, then
// /usr/share/datasets/<name>; a missing dataset error lists every path tried.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "pae/util/options.h"
#include "pae/util/registry.h"

namespace pae::data {

enum class Split { kTrain, kVal, kTest };
Split parse_split(const std::string& text);  ///< "train" | "val" | "test"
std::string to_string(Split split);

/// Typed data options (the config's `data` section).
struct DataOptions {
  std::string name = "fashion-mnist";
  std::string root;         ///< empty: search the default places
  std::string path;         ///< npy: images file; "{split}" is replaced by the split name
  std::string labels_path;  ///< npy: optional labels file, same placeholder
  int64_t val_size = 5000;  ///< validation images carved from the training split
  /// "test": carve the training and validation splits from the test split's images (when only a
  /// test set is at hand, e.g. the shared MNIST); test metrics are then not held out. "" = off.
  std::string train_from;
  uint64_t split_seed = 0;               ///< seed of the train/val carve and of synthetic sets
  int64_t subset = 0;                    ///< keep the first N images after filtering (0 = all)
  std::vector<int64_t> classes;          ///< keep only these labels (empty = all)
  std::vector<int64_t> holdout_classes;  ///< drop these labels
  int64_t channels = 0;                  ///< image-folder / synthetic: 1 or 3 (0 = 1 for synthetic, 3 for folders)
  int64_t image_size = 0;                ///< image-folder / synthetic: side in pixels (0 = 64 / 28)
  bool invert = false;                   ///< image-folder: 1 - x
  int64_t synthetic_size = 10000;        ///< noise / constant / constant-gray: number of images
  // Training-time augmentation (applied to batches by the trainer, never to val/test).
  bool dequantize = false;  ///< x <- (255 x + U[0,1)) / 256
  bool hflip = false;       ///< random horizontal flips
  int64_t shift = 0;        ///< random translations of up to this many pixels

  /// Every key of the `data` section.
  void visit(OptionVisitor& v);
};

/// A split of a dataset held in memory.
struct Dataset {
  at::Tensor images;  ///< [N,C,H,W] float32 in [0,1]
  at::Tensor labels;  ///< [N] int64
  std::string name;
  Split split = Split::kTrain;
  int64_t size() const;
};

/// Loads `split` of options.name with class filtering and subsetting applied.
Dataset load_dataset(const DataOptions& options, Split split);

/// A registered loader returns the unfiltered split.
using DatasetLoader = std::function<Dataset(const DataOptions&, Split)>;

/// The explicit dataset registry (lower-case names; built-ins registered in one function).
class DatasetRegistry : public Registry<DatasetLoader> {
 public:
  static DatasetRegistry& instance();

 private:
  DatasetRegistry() : Registry("dataset") {}
};

/// Candidate roots for `name` in search order (config root first when given).
std::vector<std::string> candidate_roots(const std::string& name, const std::string& config_root);

/// Train/val carve: a seeded permutation of [0, n); val gets the first val_size indices.
std::pair<std::vector<int64_t>, std::vector<int64_t>> carve_train_val(int64_t n, int64_t val_size, uint64_t seed);

/// Applies the training-time augmentations of `options` to a batch x:[B,C,H,W] in [0,1].
at::Tensor augment(const at::Tensor& x, const DataOptions& options);

}  // namespace pae::data
