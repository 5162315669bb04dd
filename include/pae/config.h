// Experiment configuration: YAML -> typed options, once, at the edge.
//
// A config has three sections, `data`, `model` and `train`. Unknown keys, wrong types and
// out-of-range values are errors naming the file, line and key. `--set section.key=value`
// overrides any key; the resolved config (defaults filled in) is written into the run directory.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "pae/data/dataset.h"
#include "pae/flows/options.h"
#include "pae/models/options.h"
#include "pae/train/options.h"

namespace pae {

struct Config {
  data::DataOptions data;
  ModelOptions model;
  TrainOptions train;
  flows::FlowOptions flow;  ///< the `flow` section (pae-flow)
  std::string source;       ///< file it was read from
  /// "file:line" (or "--set") of every key given, e.g. locations["train.epochs"].
  std::map<std::string, std::string> locations;

  /// Where `key` ("section.key") was set, for error messages ("default" if never set).
  std::string where(const std::string& key) const;
};

/// Parses YAML text (`source` names it in errors), then applies "section.key=value" overrides.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});

/// Reads and parses a config file.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

/// The resolved config as YAML, every key written out (parse_config round-trips it).
std::string to_yaml(const Config& config);

/// Checks the value ranges; errors name file, line and key.
void validate(const Config& config);

}  // namespace pae
