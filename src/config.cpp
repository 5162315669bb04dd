#include "pae/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "pae/models/autoencoder.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/text.h"

namespace pae {

namespace {

std::string type_name(const std::string*) { return "a string"; }
std::string type_name(const int64_t*) { return "an integer"; }
std::string type_name(const uint64_t*) { return "a non-negative integer"; }
std::string type_name(const double*) { return "a number"; }
std::string type_name(const bool*) { return "true or false"; }
std::string type_name(const std::vector<int64_t>*) { return "a list of integers, e.g. [1, 2]"; }

std::string describe(const YAML::Node& n) {
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "nothing";
}

/// Every key of a `groups.<name>` entry.
template <class G, class Visitor>
void visit_group(G& g, Visitor& v) {
  v("optimizer", g.optimizer);
  v("lr", g.lr);
  v("momentum", g.momentum);
  v("weight_decay", g.weight_decay);
  v("lr_schedule", g.lr_schedule);
  v("warmup_epochs", g.warmup_epochs);
  v("lr_decay_epoch", g.lr_decay_epoch);
  v("lr_decay", g.lr_decay);
  v("grad_clip", g.grad_clip);
}

}  // namespace

std::string Config::where(const std::string& key) const {
  auto it = locations.find(key);
  return it == locations.end() ? source + " (default of " + key + ")" : it->second;
}

namespace {

/// Keys that changed meaning, never reinterpreted silently (an old flow run's config.yml included,
/// so that --resume refuses it): nullopt for any other key; "" when `value` means the same under
/// the replacement (a run directory's config.yml lists every key, `latent_noise: 0` included);
/// otherwise the error that says what replaced the key.
std::optional<std::string> retired_key(const std::string& key, const YAML::Node& value) {
  if (key != "train.latent_noise") return std::nullopt;
  double number = 1;
  if (value.IsScalar()) {
    try {
      number = value.as<double>();
    } catch (const YAML::Exception&) {
    }
  }
  if (number == 0) return "";
  return "key 'train.latent_noise' (noise in raw latent units) was replaced by 'train.latent_noise_std', in "
         "units of each latent dimension's std; divide the old value by the latents' std (on the shipped "
         "Fashion-MNIST AE, 2-5: the old 0.3 is about 0.1), or start from configs/fmnist_nsf.yml";
}

/// Reads the `groups` section: a mapping of group names to mappings of optimizer keys.
/// Duplicate keys anywhere in the document are errors naming both lines (YAML parsers keep the
/// first and drop the second without a word).
void check_unique_keys(const YAML::Node& node, const std::string& source, const std::string& path = "") {
  if (node.IsSequence()) {
    for (const auto& item : node) check_unique_keys(item, source, path);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> first_line;
  for (const auto& kv : node) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
    const int line = kv.first.Mark().line + 1;
    const std::string full = path.empty() ? key : path + "." + key;
    const auto [it, fresh] = first_line.emplace(key, line);
    if (!fresh)
      throw Error(source + ":" + std::to_string(line) + ": duplicate key '" + full + "' (first given at line " +
                  std::to_string(it->second) + "); keep one");
    check_unique_keys(kv.second, source, full);
  }
}

/// A YAML value as a field of type T; YAML::BadConversion when it is not one.
template <class T>
T convert_yaml(const YAML::Node& n) {
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (n.IsScalar()) return {n.as<int64_t>()};  // a single class: `classes: 3`
    if (!n.IsSequence()) throw YAML::BadConversion(n.Mark());
    return n.as<std::vector<int64_t>>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    return n.as<std::string>();
  } else if constexpr (std::is_same_v<T, uint64_t>) {
    if (!n.IsScalar() || n.Scalar().find('-') != std::string::npos) throw YAML::BadConversion(n.Mark());
    return n.as<uint64_t>();
  } else {
    if (!n.IsScalar()) throw YAML::BadConversion(n.Mark());
    return n.as<T>();
  }
}

/// convert_yaml, or an error naming `where`, the key and the type expected.
template <class T>
T read_value(const YAML::Node& n, const std::string& where, const std::string& key) {
  try {
    return convert_yaml<T>(n);
  } catch (const YAML::Exception&) {
    throw Error(where + ": key '" + key + "': expected " + type_name(static_cast<T*>(nullptr)) + ", got " +
                describe(n));
  }
}

std::string value_text(const std::string& v) { return "'" + v + "'"; }
std::string value_text(bool v) { return v ? "true" : "false"; }
std::string value_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
template <class T, class = std::enable_if_t<std::is_integral_v<T>>>
std::string value_text(T v) {
  return std::to_string(v);
}

/// A spec's expected text for a value of type T ("{a n}": "an integer" or "a number").
template <class T>
std::string expected_text(const Spec& spec) {
  constexpr bool integer = std::is_integral_v<T>;
  std::string text = spec.expected;
  for (auto [token, with] : {std::pair<std::string, std::string>{"{a n}", integer ? "an integer" : "a number"},
                             std::pair<std::string, std::string>{"{n}", integer ? "integer" : "number"}})
    for (auto at = text.find(token); at != std::string::npos; at = text.find(token))
      text.replace(at, token.size(), with);
  return text;
}

/// An error naming `where` and `key` unless `value` is one that `spec` accepts.
template <class T>
void check_value(const Spec& spec, const T& value, const std::string& where, const std::string& key) {
  const auto fail = [&](const std::string& expected, const std::string& got) {
    throw Error(where + ": key '" + key + "': expected " + expected + ", got " + got);
  };
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (spec.nonempty && value.empty()) fail("at least one value", "[]");
    for (const auto element : value)
      if (spec.number_ok && !spec.number_ok(double(element))) fail(expected_text<int64_t>(spec), value_text(element));
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (spec.text_ok && !spec.text_ok(value)) fail(expected_text<T>(spec), value_text(value));
  } else if constexpr (!std::is_same_v<T, bool>) {
    if (spec.number_ok && !spec.number_ok(double(value))) fail(expected_text<T>(spec), value_text(value));
  }
}

/// Gives every field type of OptionVisitor to one member template `Impl::field`.
template <class Impl>
class FieldVisitor : public OptionVisitor {
 public:
  void operator()(const std::string& k, std::string& f, const Spec& s) override { self().field(k, f, s); }
  void operator()(const std::string& k, int64_t& f, const Spec& s) override { self().field(k, f, s); }
  void operator()(const std::string& k, uint64_t& f, const Spec& s) override { self().field(k, f, s); }
  void operator()(const std::string& k, double& f, const Spec& s) override { self().field(k, f, s); }
  void operator()(const std::string& k, bool& f, const Spec& s) override { self().field(k, f, s); }
  void operator()(const std::string& k, std::vector<int64_t>& f, const Spec& s) override { self().field(k, f, s); }

 private:
  Impl& self() { return static_cast<Impl&>(*this); }
};

using SectionVisit = std::function<void(OptionVisitor&)>;

/// The config's sections of keys, in order, each visited by its options struct (`groups` is
/// read apart: its entries are named by the user).
std::vector<std::pair<std::string, SectionVisit>> sections_of(Config& c) {
  return {{"data", [&c](OptionVisitor& v) { c.data.visit(v); }},
          {"model", [&c](OptionVisitor& v) { c.model.visit(v); }},
          {"train", [&c](OptionVisitor& v) { c.train.visit(v); }},
          {"flow", [&c](OptionVisitor& v) { c.flow.visit(v); }}};
}

/// Whether `value` equals the default of key `key` in one options struct visited.
class DefaultMatcher : public FieldVisitor<DefaultMatcher> {
 public:
  DefaultMatcher(std::string key, YAML::Node value) : key_(std::move(key)), value_(std::move(value)) {}
  template <class T>
  void field(const std::string& key, T& field, const Spec&) {
    if (key != key_) return;
    found = true;
    try {
      equal = equal || convert_yaml<T>(value_) == field;
    } catch (const YAML::Exception&) {
    }
  }
  bool found = false, equal = false;

 private:
  std::string key_;
  YAML::Node value_;
};

/// The model families whose keys include `key`, and whether `value` is its default in one of them.
struct ModelKeyOwners {
  std::vector<std::string> types;
  bool is_default = false;
};
ModelKeyOwners model_key_owners(const std::string& key, const YAML::Node& value) {
  ModelKeyOwners owners;
  for (const auto& type : models::AutoEncoderRegistry::instance().names()) {
    ModelOptions probe;
    probe.type = type;
    DefaultMatcher matcher(key, value);
    probe.visit(matcher);
    if (!matcher.found) continue;
    owners.types.push_back(type);
    owners.is_default = owners.is_default || matcher.equal;
  }
  return owners;
}

/// Reads one section's keys from its YAML mapping into the typed fields, checking each value.
class SectionReader : public FieldVisitor<SectionReader> {
 public:
  SectionReader(Config& config, std::string section, YAML::Node node)
      : config_(config), section_(std::move(section)), node_(std::move(node)) {}

  template <class T>
  void field(const std::string& key, T& field, const Spec& spec) {
    if (spec.unused.empty()) valid_.push_back(key);
    if (!node_.IsMap() || !node_[key]) return;
    read_.insert(key);
    const std::string full = section_ + "." + key;
    const T value = read_value<T>(node_[key], config_.where(full), full);
    if (!spec.unused.empty()) {
      // Its default changes nothing (the resolved configs of earlier versions list every key).
      if (value == field) return;
      throw Error(config_.where(full) + ": key '" + full + "' is not used by " + chosen() + ": " + spec.unused +
                  "; remove it");
    }
    check_value(spec, value, config_.where(full), full);
    field = value;
  }

  /// An error for a key the section's struct did not visit: unknown, retired, or another model
  /// family's (its default value allowed, as above).
  void check_unread_keys(RetiredKeys retired) {
    if (!node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (read_.count(key)) continue;
      const std::string full = section_ + "." + key;
      if (const auto why = retired_key(full, kv.second)) {
        if (why->empty() || retired == RetiredKeys::ignore) continue;  // means the same as before, or unused
        throw Error(config_.where(full) + ": " + *why);
      }
      if (section_ == "model") {
        const auto owners = model_key_owners(key, kv.second);
        if (owners.is_default) continue;
        if (!owners.types.empty())
          throw Error(config_.where(full) + ": key '" + full + "' is not used by " + chosen() + ": " +
                      (config_.model.type == "classifier" ? "the classifier has a fixed architecture"
                                                          : "it applies to model.type " + joined(owners.types)) +
                      "; remove it");
      }
      throw Error(config_.where(full) + ": unknown key '" + full + "'; valid keys in '" + section_ +
                  "': " + joined(valid_, ", "));
    }
  }

 private:
  std::string chosen() const {
    if (section_ != "model") return "this config";
    return "model.type '" + config_.model.type + "' (arch '" + config_.model.arch + "')";
  }

  Config& config_;
  std::string section_;
  YAML::Node node_;
  std::vector<std::string> valid_;
  std::set<std::string> read_;
};

/// Writes the keys that apply, defaults included.
class SectionWriter : public FieldVisitor<SectionWriter> {
 public:
  explicit SectionWriter(YAML::Emitter& out) : out_(out) {}
  template <class T>
  void field(const std::string& key, T& field, const Spec& spec) {
    if (!spec.unused.empty()) return;
    out_ << YAML::Key << key << YAML::Value;
    if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      out_ << YAML::Flow << field;
    } else if constexpr (std::is_same_v<T, std::string>) {
      out_ << YAML::DoubleQuoted << field;
    } else {
      out_ << field;
    }
  }

 private:
  YAML::Emitter& out_;
};

/// Checks every key that applies, defaults included (a default can be wrong beside another
/// key's value: min_bin_width and many bins).
class SectionChecker : public FieldVisitor<SectionChecker> {
 public:
  SectionChecker(const Config& config, std::string section) : config_(config), section_(std::move(section)) {}
  template <class T>
  void field(const std::string& key, T& field, const Spec& spec) {
    const std::string full = section_ + "." + key;
    if (spec.unused.empty()) check_value(spec, field, config_.where(full), full);
  }

 private:
  const Config& config_;
  std::string section_;
};

/// Calls `check` with the spec of each key visited that `checks` names.
class SpecFinder : public FieldVisitor<SpecFinder> {
 public:
  explicit SpecFinder(std::map<std::string, std::function<void(const Spec&)>> checks) : checks_(std::move(checks)) {}
  template <class T>
  void field(const std::string& key, T&, const Spec& spec) {
    if (const auto it = checks_.find(key); it != checks_.end()) it->second(spec);
  }

 private:
  std::map<std::string, std::function<void(const Spec&)>> checks_;
};

/// Each key a group gives is checked as the train key of the same name (it means that key, for
/// the group's parameters).
void check_group(const Config& c, const std::string& name, const GroupOptions& g) {
  std::map<std::string, std::function<void(const Spec&)>> checks;
  auto collect = [&](const std::string& key, const auto& value) {
    if (!value) return;
    const std::string full = "groups." + name + "." + key;
    checks[key] = [&c, full, v = *value](const Spec& spec) { check_value(spec, v, c.where(full), full); };
  };
  visit_group(g, collect);
  TrainOptions train = c.train;
  SpecFinder finder(std::move(checks));
  train.visit(finder);
}

/// Collects the keys ("section.key") a resumed run may change, of every model family.
class ResumableKeys : public FieldVisitor<ResumableKeys> {
 public:
  ResumableKeys(std::set<std::string>& keys, std::string section) : keys_(keys), section_(std::move(section)) {}
  template <class T>
  void field(const std::string& key, T&, const Spec& spec) {
    if (spec.may_change_on_resume) keys_.insert(section_ + "." + key);
  }

 private:
  std::set<std::string>& keys_;
  std::string section_;
};

const std::set<std::string>& resumable_keys() {
  static const std::set<std::string> keys = [] {
    std::set<std::string> out;
    for (const auto& type : models::AutoEncoderRegistry::instance().names()) {
      Config c;
      c.model.type = type;
      for (const auto& [name, visit] : sections_of(c)) {
        ResumableKeys lister(out, name);
        visit(lister);
      }
    }
    return out;
  }();
  return keys;
}

void parse_groups(const YAML::Node& root, Config& config) {
  const auto node = root["groups"];
  if (!node || node.IsNull()) return;
  const auto line_of = [&](const YAML::Node& n) { return config.source + ":" + std::to_string(n.Mark().line + 1); };
  require(node.IsMap(), line_of(node) +
                            ": section 'groups' must map group names to optimizer keys, e.g. "
                            "groups: {disc: {lr: 1.0e-4}}");
  for (const auto& entry : node) {
    const std::string name = entry.first.as<std::string>();
    require(entry.second.IsMap(),
            config.where("groups." + name) + ": 'groups." + name + "' must be a mapping of optimizer keys");
    GroupOptions g;
    std::vector<std::string> valid;
    auto lister = [&](const std::string& key, auto&) { valid.push_back(key); };
    visit_group(g, lister);
    for (const auto& kv : entry.second) {
      const std::string key = kv.first.as<std::string>();
      const std::string full = "groups." + name + "." + key;
      if (!config.locations.count(full)) config.locations[full] = line_of(kv.first);
      if (std::find(valid.begin(), valid.end(), key) == valid.end()) {
        std::string list;
        for (const auto& v : valid) list += (list.empty() ? "" : ", ") + v;
        throw Error(config.where(full) + ": unknown key '" + full + "'; valid keys of a group: " + list);
      }
      auto reader = [&](const std::string& k, auto& field) {
        if (k != key) return;
        using T = typename std::decay_t<decltype(field)>::value_type;
        T v{};
        try {
          v = convert_yaml<T>(kv.second);
        } catch (const YAML::Exception&) {
          throw Error(config.where(full) + ": key '" + full + "': expected " + type_name(&v) + ", got " +
                      describe(kv.second));
        }
        field = v;
      };
      visit_group(g, reader);
    }
    config.groups[name] = g;
  }
}

}  // namespace

namespace {

/// Command-line overrides, "section.key=value" with the value parsed as YAML, merged into the
/// document before it is read (a key they name that does not exist is then an unknown key).
void apply_overrides(const std::vector<std::string>& overrides, YAML::Node& root, Config& config) {
  for (const auto& ov : overrides) {
    const auto eq = ov.find('=');
    const auto dot = ov.find('.');
    require(eq != std::string::npos && dot != std::string::npos && dot < eq,
            "--set '" + ov + "': expected section.key=value, e.g. train.epochs=3");
    const std::string s = ov.substr(0, dot), k = ov.substr(dot + 1, eq - dot - 1);
    YAML::Node value;
    try {
      value = YAML::Load(ov.substr(eq + 1));
    } catch (const YAML::Exception&) {
      throw Error("--set '" + ov + "': value is not valid YAML");
    }
    if (s == "groups") {  // groups.<name>.<key>=value
      const auto dot2 = k.find('.');
      require(dot2 != std::string::npos && dot2 > 0, "--set '" + ov + "': expected groups.<group>.<key>=value");
      if (!root["groups"] || root["groups"].IsNull()) root["groups"] = YAML::Node(YAML::NodeType::Map);
      auto group = root["groups"][k.substr(0, dot2)];
      if (!group || group.IsNull()) group = YAML::Node(YAML::NodeType::Map);
      group[k.substr(dot2 + 1)] = value;
      root["groups"][k.substr(0, dot2)] = group;
      config.locations["groups." + k] = "--set groups." + k;
      continue;
    }
    if (const auto why = retired_key(s + "." + k, YAML::Node()))  // a null value: always the message
      throw Error("--set '" + ov + "': " + *why);
    const auto sections = sections_of(config);
    require(std::any_of(sections.begin(), sections.end(), [&](const auto& known) { return known.first == s; }),
            "--set '" + ov + "': unknown section '" + s + "'; valid sections: data, model, train, flow, groups");
    if (!root[s] || root[s].IsNull()) root[s] = YAML::Node(YAML::NodeType::Map);
    root[s][k] = value;
    config.locations[s + "." + k] = "--set " + s + "." + k;
    config.sections.insert(s);
  }
}

}  // namespace

namespace {
Config parse_config_unguarded(const std::string& yaml_text, const std::string& source,
                              const std::vector<std::string>& overrides, RetiredKeys retired);
}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source, const std::vector<std::string>& overrides,
                    RetiredKeys retired) {
  try {
    return parse_config_unguarded(yaml_text, source, overrides, retired);
  } catch (const YAML::Exception& e) {
    // What the checks below do not name more precisely (a key that is itself a mapping, ...).
    throw Error(source + (e.mark.is_null() ? "" : ":" + std::to_string(e.mark.line + 1)) + ": " +
                (e.msg.empty() ? std::string("not a valid config") : e.msg) +
                " (expected sections of plain key: value pairs)");
  }
}

namespace {
Config parse_config_unguarded(const std::string& yaml_text, const std::string& source,
                              const std::vector<std::string>& overrides, RetiredKeys retired) {
  Config config;
  config.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw Error(source + ":" + std::to_string(e.mark.line + 1) + ": YAML syntax error: " + e.msg);
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  require(root.IsMap(), source + ": expected a mapping with sections data, model, train");
  check_unique_keys(root, source);
  for (const auto& sec : root) config.sections.insert(sec.first.as<std::string>());

  const auto sections = sections_of(config);
  for (const auto& sec : root) {
    const std::string s = sec.first.as<std::string>();
    const std::string line = source + ":" + std::to_string(sec.first.Mark().line + 1);
    if (s == "groups") continue;  // parsed below
    const bool known =
        std::any_of(sections.begin(), sections.end(), [&](const auto& known) { return known.first == s; });
    if (!known) throw Error(line + ": unknown section '" + s + "'; valid sections: data, model, train, flow, groups");
    if (sec.second.IsNull()) continue;
    require(sec.second.IsMap(), line + ": section '" + s + "' must be a mapping of keys");
    for (const auto& kv : sec.second)
      config.locations[s + "." + kv.first.as<std::string>()] = source + ":" + std::to_string(kv.first.Mark().line + 1);
  }
  apply_overrides(overrides, root, config);
  for (const auto& [name, visit] : sections) {
    SectionReader reader(config, name, root[name] ? root[name] : YAML::Node());
    visit(reader);
    reader.check_unread_keys(retired);
  }
  parse_groups(root, config);
  validate(config);
  return config;
}
}  // namespace

namespace {

/// A scalar as a person reads it: numbers in their shortest form (0.0003, not 0.00029999999999999997).
std::string readable(const std::string& scalar) {
  char* end = nullptr;
  const double v = std::strtod(scalar.c_str(), &end);
  if (scalar.empty() || end != scalar.c_str() + scalar.size() || scalar.find_first_of(".eE") == std::string::npos)
    return scalar;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", v);
  return buf;
}

void flatten(const YAML::Node& node, const std::string& path, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node)
      flatten(kv.second, path.empty() ? kv.first.Scalar() : path + "." + kv.first.Scalar(), out);
  } else if (node.IsSequence()) {
    std::string s;
    for (const auto& item : node) s += (s.empty() ? "" : ", ") + (item.IsScalar() ? item.Scalar() : YAML::Dump(item));
    out[path] = "[" + s + "]";
  } else {
    out[path] = node.IsScalar() ? node.Scalar() : "";
  }
}

}  // namespace

std::vector<ConfigChange> config_changes(const std::string& before_yaml, const std::string& after_yaml) {
  std::map<std::string, std::string> a, b;
  flatten(YAML::Load(before_yaml), "", a);
  flatten(YAML::Load(after_yaml), "", b);
  std::vector<ConfigChange> out;
  for (const auto& [k, v] : a) {
    const auto it = b.find(k);
    if (it == b.end()) {
      out.push_back({k, readable(v), "(absent)"});
    } else if (it->second != v) {
      out.push_back({k, readable(v), readable(it->second)});
    }
  }
  for (const auto& [k, v] : b)
    if (!a.count(k)) out.push_back({k, "(absent)", readable(v)});
  std::sort(out.begin(), out.end(), [](const ConfigChange& x, const ConfigChange& y) { return x.key < y.key; });
  return out;
}

CheckpointEvery parse_checkpoint_every(const std::string& text) {
  static const std::regex form(R"(\s*([0-9]{1,12})(\.[0-9]{0,6})?\s*(steps?|min|minutes)?\s*)");
  std::smatch m;
  CheckpointEvery every;
  const bool matched = std::regex_match(text, m, form);
  const std::string unit = matched ? m[3].str() : "";
  if (matched && (unit.empty() || unit[0] == 's') && !m[2].matched) {
    every.steps = std::stoll(m[1].str());
  } else if (matched && (unit == "min" || unit == "minutes") && std::stod(m[1].str() + m[2].str()) > 0) {
    every.minutes = std::stod(m[1].str() + m[2].str());
  } else {
    throw Error("train.checkpoint_every '" + text +
                "': expected 0 (off), a number of steps (500, '500 steps') or of minutes ('10 min')");
  }
  return every;
}

bool may_change_on_resume(const std::string& key) {
  // A group's key means the train key of the same name, for the group's parameters.
  if (key.rfind("groups.", 0) == 0) {
    const auto dot = key.find('.', 7);
    return dot != std::string::npos && resumable_keys().count("train." + key.substr(dot + 1)) > 0;
  }
  return resumable_keys().count(key) > 0;
}

void require_sections(const Config& config, const std::vector<std::string>& needed, const std::string& program,
                      const std::string& hint) {
  for (const auto& s : needed) {
    if (config.sections.count(s)) continue;
    std::string list;
    for (const auto& n : needed) list += (list.empty() ? "" : " and ") + n;
    throw Error(config.source + ": no '" + s + "' section; " + program + " needs " +
                (needed.size() == 1 ? "a " + list + " section" : list + " sections") +
                (hint.empty() ? "" : " (" + hint + ")"));
  }
}

std::vector<ConfigChange> changes_since(const std::string& stored_yaml, const std::string& source, const Config& now) {
  return config_changes(to_yaml(parse_config(stored_yaml, source)), to_yaml(now));
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides, RetiredKeys retired) {
  require(fs::is_regular_file(path), "config file not found: " + path);
  return parse_config(read_text(path), path, overrides, retired);
}

std::string to_yaml(const Config& config) {
  Config copy = config;  // visiting fills in a family's defaults
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& [name, visit] : sections_of(copy)) {
    out << YAML::Key << name << YAML::Value << YAML::BeginMap;
    SectionWriter writer(out);
    visit(writer);
    out << YAML::EndMap;
  }
  if (!config.groups.empty()) {
    out << YAML::Key << "groups" << YAML::Value << YAML::BeginMap;
    for (const auto& [name, g] : config.groups) {
      out << YAML::Key << name << YAML::Value << YAML::BeginMap;
      auto group_emitter = [&](const std::string& key, const auto& field) {
        if (!field) return;
        out << YAML::Key << key << YAML::Value;
        if constexpr (std::is_same_v<std::decay_t<decltype(*field)>, std::string>) {
          out << YAML::DoubleQuoted << *field;
        } else {
          out << *field;
        }
      };
      visit_group(g, group_emitter);
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void validate(const Config& config) {
  Config copy = config;
  for (const auto& [name, visit] : sections_of(copy)) {
    SectionChecker checker(config, name);
    visit(checker);
  }
  for (const auto& [name, g] : config.groups) check_group(config, name, g);
}

void TrainOptions::visit(OptionVisitor& v) {
  // More threads than 4 per core only spin (100,000 hung the machine).
  const double max_threads = 4.0 * std::max(1u, std::thread::hardware_concurrency());
  const auto threads_up_to = [&](const std::string& zero) {
    return number_where([max_threads](double n) { return n >= 0 && n <= max_threads; },
                        "an integer in [0, " + std::to_string(int64_t(max_threads)) + "] (" + zero + ")");
  };
  const auto checkpoint_form = [](const std::string& text) {
    try {
      parse_checkpoint_every(text);
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  v("epochs", epochs, positive().resumable());
  v("batch_size", batch_size, positive());
  v("optimizer", optimizer, one_of({"adam", "adamw", "sgd"}));
  v("lr", lr, positive().resumable());
  v("momentum", momentum, in_half_open(0, 1).resumable());
  v("lr_schedule", lr_schedule, one_of({"constant", "cosine", "step"}).resumable());
  v("warmup_epochs", warmup_epochs, at_least(0).resumable());
  v("lr_restart_epochs", lr_restart_epochs,
    number_where([](double e) { return e >= 0; }, "an integer >= 0 (0 = one cosine over the run)").resumable());
  v("model_checkpoint", model_checkpoint, one_of({"best", "last"}).resumable());
  v("weight_decay", weight_decay, at_least(0).resumable());
  v("grad_clip", grad_clip, number_where([](double c) { return c >= 0; }, "a number >= 0 (0 = off)").resumable());
  v("ema", ema, number_where([](double d) { return d >= 0 && d < 1; }, "a decay in [0, 1) (0 = off)"));
  v("seed", seed, any_value());
  v("threads", threads, threads_up_to("0 = all cores; 4 per core at most").resumable());
  v("blas_threads", blas_threads, threads_up_to("0 = 1").resumable());
  v("device", device, any_value().resumable());
  v("eval_batch_size", eval_batch_size, positive().resumable());
  v("num_samples", num_samples, positive().resumable());
  v("save_latents", save_latents, any_value().resumable());
  v("latent_noise_std", latent_noise_std,
    number_where([](double s) { return s >= 0; }, "a number >= 0 (in units of each latent's std)"));
  v("patience", patience, number_where([](double p) { return p >= 0; }, "an integer >= 0 (0 = off)").resumable());
  v("nonfinite", nonfinite, one_of({"stop", "skip", "reduce_lr"}).resumable());
  v("divergence_check", divergence_check, any_value().resumable());
  v("lr_decay_epoch", lr_decay_epoch, at_least(0).resumable());
  v("lr_decay", lr_decay, positive().resumable());
  v("dtype", dtype, one_of({"float32", "float64"}));
  v("distributed_backend", distributed_backend, one_of({"auto", "gloo", "nccl"}).resumable());
  v("distributed_timeout_s", distributed_timeout_s,
    number_where([](double s) { return s > 0; }, "a positive number of seconds").resumable());
  v("checkpoint_every", checkpoint_every,
    text_where(checkpoint_form, "0 (off), a number of steps (500, '500 steps') or of minutes ('10 min')").resumable());
}

}  // namespace pae
