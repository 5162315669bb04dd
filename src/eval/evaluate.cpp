#include "pae/eval/evaluate.h"

#include <torch/torch.h>

#include <set>
#include <sstream>

#include "pae/data/npy.h"
#include "pae/metrics/ood.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"

namespace pae::eval {

namespace {

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

}  // namespace

std::vector<double> to_doubles(const at::Tensor& t) {
  const auto c = t.to(torch::kCPU, torch::kFloat64).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

data::Dataset load_set(const std::string& spec, const Config& ae_config, const std::vector<int64_t>& image_shape,
                       int64_t limit) {
  require(!spec.empty(), "empty dataset name (expected name[:split], e.g. mnist:test)");
  const auto colon = spec.find(':');
  data::DataOptions o = ae_config.data;
  o.name = spec.substr(0, colon);
  if (o.name == "holdout") {
    // The classes the run held out of training (data.holdout_classes), from its own dataset.
    require(!ae_config.data.holdout_classes.empty(),
            "set '" + spec + "': the auto-encoder was trained without data.holdout_classes");
    o.name = ae_config.data.name;
    o.classes = ae_config.data.holdout_classes;
    o.holdout_classes.clear();
  }
  auto split = data::Split::kTest;
  const std::string suffix = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const bool is_split = suffix.empty() || suffix == "train" || suffix == "val" || suffix == "test";
  const bool user_set = (o.name == "npy" || o.name == "folder") && !is_split;
  if (user_set) {
    // A user's own images: npy:PATH (an array [N,C,H,W] in [0, 1]) or folder:PATH (image files,
    // resized and cropped to the AE's input). The whole file or folder is the set. ("npy:test"
    // still names the test split of an AE trained on an npy dataset.)
    const std::string path = suffix;
    o = data::DataOptions{};
    if (spec.rfind("npy:", 0) == 0) {
      o.name = "npy";
      o.path = path;
    } else {
      o.name = "image-folder";
      o.root = path;
      split = data::Split::kTrain;  // with val_size 0 the training split of a flat folder is all of it
    }
    o.val_size = 0;
  } else {
    require(o.name != "folder", "set '" + spec + "': expected folder:PATH");
    split = data::parse_split(suffix.empty() ? "test" : suffix);
  }
  if (!user_set && o.name != ae_config.data.name) {
    o.root.clear();
    o.path.clear();
    o.labels_path.clear();
    o.classes.clear();
    o.holdout_classes.clear();
  }
  o.subset = 0;
  o.channels = image_shape.at(0);
  o.image_size = image_shape.at(1);
  auto set = data::load_dataset(o, split);
  if (limit > 0 && set.size() > limit) {
    set.images = set.images.slice(0, 0, limit);
    set.labels = set.labels.slice(0, 0, limit);
  }
  require(set.size() > 0, "dataset '" + spec + "' is empty (after class filters and limits)");
  const std::vector<int64_t> got(set.images.sizes().begin() + 1, set.images.sizes().end());
  require(got == image_shape, "dataset '" + spec + "' has images of shape " + shape_text(got) +
                                  " but the auto-encoder takes " + shape_text(image_shape));
  set.name = spec;
  return set;
}

std::vector<OodResult> ood_table(const std::map<std::string, at::Tensor>& in_scores,
                                 const std::map<std::string, std::map<std::string, at::Tensor>>& out_scores) {
  std::vector<OodResult> rows;
  for (const auto& [set, scores] : out_scores) {
    for (const auto& [name, in] : in_scores) {
      const auto it = scores.find(name);
      require(it != scores.end(), "OoD set " + set + " has no score " + name);
      const auto a = to_doubles(in), b = to_doubles(it->second);
      OodResult r{set,
                  name,
                  metrics::roc_auc(a, b),
                  metrics::average_precision(a, b),
                  metrics::fpr_at_tpr(a, b, 0.95),
                  int64_t(a.size()),
                  int64_t(b.size())};
      rows.push_back(r);
    }
  }
  return rows;
}

std::string ood_markdown(const std::vector<OodResult>& rows) {
  std::vector<std::string> sets, scores;
  std::map<std::pair<std::string, std::string>, double> auc;
  for (const auto& r : rows) {
    if (std::find(sets.begin(), sets.end(), r.set) == sets.end()) sets.push_back(r.set);
    if (std::find(scores.begin(), scores.end(), r.score) == scores.end()) scores.push_back(r.score);
    auc[{r.set, r.score}] = r.auroc;
  }
  std::ostringstream os;
  os << "| AUROC: OoD set |";
  for (const auto& s : scores) os << " " << s << " |";
  os << "\n| --- |";
  for (size_t i = 0; i < scores.size(); ++i) os << " --- |";
  os << "\n";
  for (const auto& set : sets) {
    os << "| " << set << " |";
    for (const auto& s : scores) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), " %.4f |", auc[{set, s}]);
      os << buf;
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace pae::eval
