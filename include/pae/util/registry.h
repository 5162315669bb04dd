// One registry for every kind of named, pluggable thing (model families, flow transforms,
// datasets): entries by lower-case name, a duplicate name an error, an unknown one an error that
// lists the valid names.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pae/util/error.h"

namespace pae {

template <typename Entry>
class Registry {
 public:
  /// `what` names the key or kind in errors: "model.type", "dataset", "flow transform".
  explicit Registry(std::string what) : what_(std::move(what)) {}

  /// Adds `name`; a name already registered is an error (a second family must not replace the
  /// first without a word).
  void add(const std::string& name, Entry entry) {
    if (!entries_.emplace(name, std::move(entry)).second)
      throw Error(what_ + " '" + name + "' is registered twice: each name may be registered once");
  }

  /// The entry of `name`; an unknown name is an error listing the valid ones.
  const Entry& get(const std::string& name) const {
    const auto it = entries_.find(name);
    if (it == entries_.end()) {
      std::string valid;
      for (const auto& [known, entry] : entries_) valid += (valid.empty() ? "" : ", ") + known;
      throw Error("unknown " + what_ + " '" + name + "'; valid names: " + valid);
    }
    return it->second;
  }

  bool contains(const std::string& name) const { return entries_.count(name) > 0; }

  /// Every name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, entry] : entries_) out.push_back(name);
    return out;
  }

 private:
  std::string what_;
  std::map<std::string, Entry> entries_;
};

}  // namespace pae
