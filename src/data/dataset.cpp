#include "pae/data/dataset.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>

#include "pae/data/npy.h"
#include "pae/data/readers.h"
#include "pae/data/thin_spiral.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::data {

Split parse_split(const std::string& text) {
  if (text == "train") return Split::kTrain;
  if (text == "val") return Split::kVal;
  if (text == "test") return Split::kTest;
  throw Error("split '" + text + "': expected train, val or test");
}

std::string to_string(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kVal:
      return "val";
    case Split::kTest:
      return "test";
  }
  return "?";
}

int64_t Dataset::size() const { return images.defined() ? images.size(0) : 0; }

std::vector<std::string> candidate_roots(const std::string& name, const std::string& config_root) {
  std::vector<std::string> roots;
  if (!config_root.empty()) roots.push_back(config_root);
  if (const char* env = std::getenv("PAE_DATA_DIR"); env != nullptr && *env != '\0')
    roots.push_back((fs::path(env) / name).string());
  roots.push_back((fs::path("data") / name).string());
  roots.push_back((fs::path("/usr/share/datasets") / name).string());
  return roots;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> carve_train_val(int64_t n, int64_t val_size, uint64_t seed) {
  require(val_size >= 0 && val_size < n, "data.val_size " + std::to_string(val_size) + ": expected 0 <= val_size < " +
                                             std::to_string(n) + " (the training split's size)");
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[size_t(i)] = i;
  // Our own Fisher-Yates on mt19937_64: the same carve on every LibTorch version and device.
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng() % uint64_t(i + 1));
    std::swap(perm[size_t(i)], perm[size_t(j)]);
  }
  std::vector<int64_t> val(perm.begin(), perm.begin() + val_size);
  std::vector<int64_t> train(perm.begin() + val_size, perm.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {train, val};
}

namespace {

/// Pixels as floats in [0, 1]: bytes are divided by 255, floats taken as they are (and must already
/// lie in [0, 1]); other types are refused rather than guessed at (0/1 integers are not 0..255).
torch::Tensor unit_pixels(const torch::Tensor& stored, const std::string& path) {
  if (stored.scalar_type() == torch::kUInt8) return stored.to(torch::kFloat).div_(255.0);
  require(torch::isFloatingType(stored.scalar_type()), path + ": images of type " +
                                                           std::string(c10::toString(stored.scalar_type())) +
                                                           ": expected bytes (0..255) or floats in [0, 1]");
  auto x = stored.to(torch::kFloat);
  if (x.numel() == 0) return x;
  const double lo = x.min().item<double>(), hi = x.max().item<double>();
  require(std::isfinite(lo) && std::isfinite(hi) && lo >= 0.0 && hi <= 1.0,
          path + ": float images must lie in [0, 1], found values in [" + std::to_string(lo) + ", " +
              std::to_string(hi) + "]");
  return x;
}

/// Vectors [N, D] as float32, any finite values (the DNF's data: points in R^D).
torch::Tensor real_vectors(const torch::Tensor& stored, const std::string& path) {
  require(torch::isFloatingType(stored.scalar_type()),
          path + ": vectors of type " + std::string(c10::toString(stored.scalar_type())) + ": expected floats");
  auto x = stored.to(torch::kFloat);
  require(x.numel() == 0 || torch::isfinite(x).all().item<bool>(), path + ": vectors hold non-finite values");
  return x;
}

const char* kHowToObtain =
    "fashion-mnist: `apt install dataset-fashion-mnist`; mnist / cifar10: download the IDX / "
    "binary files into ./data/<name> or set data.root or PAE_DATA_DIR";

/// Finds `file` (or `file`.gz) in the first candidate root that has it.
std::string find_file(const std::string& name, const std::string& config_root, const std::vector<std::string>& files,
                      Split split) {
  std::ostringstream tried;
  for (const auto& root : candidate_roots(name, config_root)) {
    for (const auto& f : files) {
      const fs::path p = fs::path(root) / f;
      if (fs::exists(p)) return p.string();
      tried << (tried.tellp() > 0 ? ", " : "") << p.string();
    }
  }
  throw Error("dataset '" + name + "' split '" + to_string(split) + "' not found; tried " + tried.str() +
              ". To obtain it: " + kHowToObtain);
}

Dataset index(const Dataset& d, const std::vector<int64_t>& idx) {
  auto t = torch::tensor(idx, torch::kInt64);
  return Dataset{d.images.index_select(0, t), d.labels.index_select(0, t), d.name, d.split};
}

/// Carves val from a train pool, or returns the pool unchanged for other splits.
Dataset carve(Dataset pool, const DataOptions& o, Split split) {
  if (split == Split::kTest) return pool;
  auto [train, val] = carve_train_val(pool.size(), o.val_size, o.split_seed);
  Dataset out = index(pool, split == Split::kTrain ? train : val);
  out.split = split;
  return out;
}

/// The thin spiral (data/thin_spiral.h): a train pool of data.synthetic_size points carved into
/// train and val, and a test set of as many, each from its own seed.
Dataset load_thin_spiral(const DataOptions& o, Split split) {
  const int64_t n = o.synthetic_size;
  const uint64_t seed = o.split_seed * 2 + (split == Split::kTest ? 2 : 1);
  const auto x = ThinSpiral::sample(n, seed).to(torch::kFloat).view({n, 1, 1, 2});
  return carve(Dataset{x, torch::zeros({n}, torch::kInt64), "thin-spiral", split}, o, split);
}

Dataset load_idx_family(const std::string& name, const DataOptions& o, Split split) {
  const std::string prefix = split == Split::kTest ? "t10k" : "train";
  const auto images_path =
      find_file(name, o.root, {prefix + "-images-idx3-ubyte.gz", prefix + "-images-idx3-ubyte"}, split);
  const auto labels_path =
      find_file(name, o.root, {prefix + "-labels-idx1-ubyte.gz", prefix + "-labels-idx1-ubyte"}, split);
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  require(images.dim() == 3,
          images_path + ": expected an [N,H,W] image file, got rank " + std::to_string(images.dim()));
  require(labels.dim() == 1 && labels.size(0) == images.size(0),
          labels_path + ": expected " + std::to_string(images.size(0)) + " labels to match " + images_path);
  Dataset pool{unit_pixels(images, images_path).unsqueeze(1), labels.to(torch::kInt64), name, split};
  return carve(std::move(pool), o, split);
}

Dataset load_cifar10(const DataOptions& o, Split split) {
  std::vector<torch::Tensor> xs, ys;
  const std::vector<std::string> batches =
      split == Split::kTest ? std::vector<std::string>{"test_batch.bin"}
                            : std::vector<std::string>{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                                       "data_batch_4.bin", "data_batch_5.bin"};
  for (const auto& b : batches) {
    const auto path = find_file("cifar10", o.root, {b, "cifar-10-batches-bin/" + b}, split);
    auto [x, y] = read_cifar_batch(path);
    xs.push_back(x);
    ys.push_back(y);
  }
  Dataset pool{torch::cat(xs).to(torch::kFloat).div_(255.0), torch::cat(ys), "cifar10", split};
  return carve(std::move(pool), o, split);
}

Dataset load_image_folder(const DataOptions& o, Split split) {
  require(!o.root.empty(), "dataset 'image-folder' needs data.root (a folder of images)");
  ImageFolderOptions io;
  io.channels = o.channels > 0 ? o.channels : 3;
  io.size = o.image_size > 0 ? o.image_size : 64;
  io.invert = o.invert;
  const fs::path split_dir = fs::path(o.root) / (split == Split::kTest ? "test" : "train");
  if (fs::is_directory(split_dir)) {
    auto [x, y] = read_image_folder(split_dir.string(), io);
    return carve(Dataset{x, y, "image-folder", split}, o, split);
  }
  // No train/test sub-folders: carve test, then val, from the whole folder with the seed.
  auto [x, y] = read_image_folder(o.root, io);
  Dataset all{x, y, "image-folder", split};
  auto [rest, test] = carve_train_val(all.size(), o.val_size, o.split_seed + 1);
  if (split == Split::kTest) return index(all, test);
  return carve(index(all, rest), o, split);
}

std::string with_split(const std::string& pattern, Split split) {
  std::string out = pattern;
  const auto pos = out.find("{split}");
  if (pos != std::string::npos) out.replace(pos, 7, to_string(split));
  return out;
}

Dataset read_npy_split(const DataOptions& o, Split split);

/// npy: data.path, with "{split}" replaced. Without a val file, val is carved from train.
Dataset load_npy(const DataOptions& o, Split split) {
  require(!o.path.empty(), "dataset 'npy' needs data.path (an .npy of images; '{split}' is replaced by the split)");
  const bool own_val = with_split(o.path, Split::kVal) != with_split(o.path, Split::kTrain) &&
                       fs::exists(with_split(o.path, Split::kVal));
  const bool carved = split != Split::kTest && !own_val;
  Dataset d = read_npy_split(o, carved ? Split::kTrain : split);
  return carved ? carve(std::move(d), o, split) : d;
}

Dataset read_npy_split(const DataOptions& o, Split split) {
  const std::string path = with_split(o.path, split);
  auto x = read_npy(path);
  require(x.dim() >= 2 && x.dim() <= 4,
          path + ": expected vectors [N,D], images [N,H,W] or [N,C,H,W], got rank " + std::to_string(x.dim()));
  if (x.dim() == 2) {
    x = real_vectors(x, path).view({x.size(0), 1, 1, x.size(1)});
  } else {
    if (x.dim() == 3) x = x.unsqueeze(1);
    x = unit_pixels(x, path);
  }
  torch::Tensor y = torch::zeros({x.size(0)}, torch::kInt64);
  if (!o.labels_path.empty()) {
    const std::string lp = with_split(o.labels_path, split);
    y = read_npy(lp).to(torch::kInt64).reshape({-1});
    require(y.size(0) == x.size(0), lp + ": expected " + std::to_string(x.size(0)) + " labels to match " + path);
  }
  return Dataset{x, y, "npy", split};
}

/// Synthetic sets of the NAE paper, generated from a seed (different per split).
Dataset load_synthetic(const std::string& kind, const DataOptions& o, Split split) {
  const int64_t c = o.channels > 0 ? o.channels : 1, s = o.image_size > 0 ? o.image_size : 28;
  const int64_t n = o.synthetic_size;
  require(n > 0, "data.synthetic_size must be positive, got " + std::to_string(n));
  auto gen = at::detail::createCPUGenerator(o.split_seed * 3 + static_cast<uint64_t>(split) + 12345);
  torch::Tensor x;
  if (kind == "noise") {
    x = torch::rand({n, c, s, s}, gen);
  } else if (kind == "constant") {
    x = torch::rand({n, c, 1, 1}, gen).expand({n, c, s, s}).contiguous();
  } else {  // constant-gray: one value for every channel and pixel
    x = torch::rand({n, 1, 1, 1}, gen).expand({n, c, s, s}).contiguous();
  }
  return Dataset{x, torch::zeros({n}, torch::kInt64), kind, split};
}

void register_builtin_datasets(DatasetRegistry& r) {
  r.add("fashion-mnist", [](const DataOptions& o, Split s) { return load_idx_family("fashion-mnist", o, s); });
  r.add("mnist", [](const DataOptions& o, Split s) { return load_idx_family("mnist", o, s); });
  r.add("cifar10", load_cifar10);
  r.add("image-folder", load_image_folder);
  r.add("npy", load_npy);
  r.add("thin-spiral", load_thin_spiral);
  for (const char* kind : {"noise", "constant", "constant-gray"}) {
    r.add(kind, [kind](const DataOptions& o, Split s) { return load_synthetic(kind, o, s); });
  }
}

}  // namespace

DatasetRegistry& DatasetRegistry::instance() {
  static DatasetRegistry* registry = [] {
    auto* r = new DatasetRegistry();
    register_builtin_datasets(*r);
    return r;
  }();
  return *registry;
}

namespace {

std::string list_text(const std::vector<int64_t>& values) {
  std::string out;
  for (const auto v : values) out += (out.empty() ? "" : ", ") + std::to_string(v);
  return "[" + out + "]";
}

/// Why class filtering left nothing: the keys and values, and the labels the split has.
std::string no_class_kept(const DataOptions& o, Split split, const torch::Tensor& labels) {
  const auto all = labels.to(torch::kInt64).contiguous();
  const std::set<int64_t> present(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
  const std::vector<int64_t> has(present.begin(), present.end());
  std::string filters;
  if (!o.classes.empty()) filters = "data.classes " + list_text(o.classes);
  if (!o.holdout_classes.empty())
    filters += (filters.empty() ? "" : " with ") + std::string("data.holdout_classes ") + list_text(o.holdout_classes);
  return filters + " keep none of the " + std::to_string(labels.numel()) + " images of dataset '" + o.name +
         "' split '" + to_string(split) + "', whose labels are " + list_text(has);
}

}  // namespace

Dataset load_dataset(const DataOptions& options, Split split) {
  require(options.train_from.empty() || options.train_from == "test",
          "data.train_from '" + options.train_from + "': expected test (or nothing)");
  const auto& loader = DatasetRegistry::instance().get(options.name);
  Dataset d = options.train_from == "test" && split != Split::kTest
                  ? carve(loader(options, Split::kTest), options, split)
                  : loader(options, split);
  d.split = split;
  if (!options.classes.empty() || !options.holdout_classes.empty()) {
    const auto labels_before = d.labels;
    auto keep = torch::ones({d.size()}, torch::kBool);
    if (!options.classes.empty()) keep = torch::isin(d.labels, torch::tensor(options.classes, torch::kInt64));
    if (!options.holdout_classes.empty())
      keep =
          keep.logical_and(torch::isin(d.labels, torch::tensor(options.holdout_classes, torch::kInt64)).logical_not());
    auto idx = keep.nonzero().reshape({-1});
    d.images = d.images.index_select(0, idx);
    d.labels = d.labels.index_select(0, idx);
    if (d.size() == 0) throw Error(no_class_kept(options, split, labels_before));
  }
  if (options.subset > 0 && options.subset < d.size()) {
    d.images = d.images.slice(0, 0, options.subset).clone();
    d.labels = d.labels.slice(0, 0, options.subset).clone();
  }
  require(d.size() > 0, "dataset '" + options.name + "' split '" + to_string(split) + "' is empty");
  return d;
}

at::Tensor augment(const at::Tensor& x, const DataOptions& o) {
  torch::Tensor out = x;
  if (o.dequantize) out = (out * 255.0 + torch::rand_like(out)) / 256.0;
  if (o.hflip) {
    auto flip = torch::rand({x.size(0), 1, 1, 1}, x.options()) < 0.5;
    out = torch::where(flip, out.flip({3}), out);
  }
  if (o.shift > 0) {
    const int64_t k = o.shift, h = x.size(2), w = x.size(3);
    auto padded = torch::constant_pad_nd(out, {k, k, k, k}, 0.0);
    auto offsets = torch::randint(0, 2 * k + 1, {x.size(0), 2}, torch::kInt64).cpu();
    auto acc = offsets.accessor<int64_t, 2>();
    std::vector<torch::Tensor> rows;
    rows.reserve(size_t(x.size(0)));
    for (int64_t i = 0; i < x.size(0); ++i)
      rows.push_back(padded[i].slice(1, acc[i][0], acc[i][0] + h).slice(2, acc[i][1], acc[i][1] + w));
    out = torch::stack(rows);
  }
  return out;
}

void DataOptions::visit(OptionVisitor& v) {
  v("name", name, any_value());
  v("root", root, any_value().resumable());  // where the same files are (another machine)
  v("path", path, any_value());
  v("labels_path", labels_path, any_value());
  v("val_size", val_size, at_least(0));
  v("train_from", train_from, one_of({"", "test"}));
  v("split_seed", split_seed, any_value());
  v("subset", subset, at_least(0));
  v("classes", classes, any_value());
  v("holdout_classes", holdout_classes, any_value());
  v("channels", channels, number_where([](double c) { return c == 0 || c == 1 || c == 3; }, "0, 1 or 3"));
  v("image_size", image_size, at_least(0));
  v("invert", invert, any_value());
  v("synthetic_size", synthetic_size, positive());
  v("dequantize", dequantize, any_value());
  v("hflip", hflip, any_value());
  v("shift", shift, at_least(0));
}

}  // namespace pae::data
