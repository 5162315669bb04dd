#include "pae/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "pae/util/error.h"
#include "pae/util/fs.h"

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

/// Every (section, key, field) of a Config, visited in one place so that parsing and emitting
/// cannot drift apart.
template <class Visitor>
void visit_fields(Config& c, Visitor& v) {
  auto& d = c.data;
  v.section("data");
  v("name", d.name);
  v("root", d.root);
  v("path", d.path);
  v("labels_path", d.labels_path);
  v("val_size", d.val_size);
  v("train_from", d.train_from);
  v("split_seed", d.split_seed);
  v("subset", d.subset);
  v("classes", d.classes);
  v("holdout_classes", d.holdout_classes);
  v("channels", d.channels);
  v("image_size", d.image_size);
  v("invert", d.invert);
  v("synthetic_size", d.synthetic_size);
  v("dequantize", d.dequantize);
  v("hflip", d.hflip);
  v("shift", d.shift);
  auto& m = c.model;
  v.section("model");
  v("type", m.type);
  v("arch", m.arch);
  v("latent_dim", m.latent_dim);
  v("hidden", m.hidden);
  v("channels", m.channels);
  v("kernel", m.kernel);
  v("batch_norm", m.batch_norm);
  v("activation", m.activation);
  v("recon_loss", m.recon_loss);
  v("beta", m.beta);
  v("sigma", m.sigma);
  v("dropout", m.dropout);
  v("prior", m.prior);
  v("prior_std", m.prior_std);
  v("prior_components", m.prior_components);
  v("prior_layout", m.prior_layout);
  v("prior_radius", m.prior_radius);
  v("conditional", m.conditional);
  v("disc_hidden", m.disc_hidden);
  v("nae_epochs", m.nae_epochs);
  v("nae_batches", m.nae_batches);
  v("gamma", m.gamma);
  v("temperature", m.temperature);
  v("encoder_l2", m.encoder_l2);
  v("buffer_size", m.buffer_size);
  v("replay_ratio", m.replay_ratio);
  v("z_steps", m.z_steps);
  v("z_step_size", m.z_step_size);
  v("z_noise", m.z_noise);
  v("x_steps", m.x_steps);
  v("x_step_size", m.x_step_size);
  v("x_noise", m.x_noise);
  v("x_grad_clip", m.x_grad_clip);
  v("x_grad_clip_per", m.x_grad_clip_per);
  v("chain_groups", m.chain_groups);
  auto& t = c.train;
  v.section("train");
  v("epochs", t.epochs);
  v("batch_size", t.batch_size);
  v("optimizer", t.optimizer);
  v("lr", t.lr);
  v("momentum", t.momentum);
  v("lr_schedule", t.lr_schedule);
  v("warmup_epochs", t.warmup_epochs);
  v("model_checkpoint", t.model_checkpoint);
  v("weight_decay", t.weight_decay);
  v("grad_clip", t.grad_clip);
  v("ema", t.ema);
  v("seed", t.seed);
  v("threads", t.threads);
  v("blas_threads", t.blas_threads);
  v("device", t.device);
  v("eval_batch_size", t.eval_batch_size);
  v("num_samples", t.num_samples);
  v("save_latents", t.save_latents);
  v("latent_noise_std", t.latent_noise_std);
  v("patience", t.patience);
  v("nonfinite", t.nonfinite);
  v("divergence_check", t.divergence_check);
  v("lr_decay_epoch", t.lr_decay_epoch);
  v("lr_decay", t.lr_decay);
  v("dtype", t.dtype);
  v("distributed_backend", t.distributed_backend);
  v("distributed_timeout_s", t.distributed_timeout_s);
  v("checkpoint_every", t.checkpoint_every);
  auto& f = c.flow;
  v.section("flow");
  v("type", f.type);
  v("layers", f.layers);
  v("hidden", f.hidden);
  v("hidden_layers", f.hidden_layers);
  v("conditioner", f.conditioner);
  v("bins", f.bins);
  v("tail_bound", f.tail_bound);
  v("min_bin_width", f.min_bin_width);
  v("min_bin_height", f.min_bin_height);
  v("min_derivative", f.min_derivative);
  v("permutation", f.permutation);
  v("actnorm", f.actnorm);
  v("batch_norm", f.batch_norm);
  v("dropout", f.dropout);
  v("dropout_anneal", f.dropout_anneal);
  v("tails", f.tails);
  v("seed", f.seed);
}

/// Which families use a `model` key: a key given that the chosen model does not use is an
/// error, and the resolved config leaves it out. Empty: the key applies to every family.
/// "" as the reason means it applies.
std::string unused_model_key(const ModelOptions& m, const std::string& key) {
  if (key == "type") return "";
  if (m.type == "classifier") return "the classifier has a fixed architecture";
  if ((key == "beta" || key == "sigma") && m.type != "vae") return "it applies to model.type vae";
  if (key == "sigma" && m.recon_loss != "gaussian") return "it applies to recon_loss gaussian";
  const bool aae_key = key.rfind("prior", 0) == 0 || key == "conditional" || key == "disc_hidden";
  if (aae_key && m.type != "aae") return "it applies to model.type aae";
  static const std::vector<std::string> nae_keys = {"nae_epochs",  "nae_batches", "gamma",           "temperature",
                                                    "encoder_l2",  "buffer_size", "replay_ratio",    "z_steps",
                                                    "z_step_size", "z_noise",     "x_steps",         "x_step_size",
                                                    "x_noise",     "x_grad_clip", "x_grad_clip_per", "chain_groups"};
  if (std::find(nae_keys.begin(), nae_keys.end(), key) != nae_keys.end() && m.type != "nae")
    return "it applies to model.type nae";
  if ((key == "prior_components" || key == "prior_layout" || key == "prior_radius") && m.prior != "mixture")
    return "it applies to prior mixture";
  if ((key == "hidden" || key == "dropout") && m.arch != "mlp") return "it applies to arch mlp";
  if ((key == "channels" || key == "kernel" || key == "batch_norm") && m.arch != "conv")
    return "it applies to arch conv";
  return "";
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

/// Whether model key `key` holds its default value.
bool is_default_model_value(const ModelOptions& m, const std::string& key) {
  const ModelOptions d;
  if (key == "arch") return m.arch == d.arch;
  if (key == "latent_dim") return m.latent_dim == d.latent_dim;
  if (key == "hidden") return m.hidden == d.hidden;
  if (key == "channels") return m.channels == d.channels;
  if (key == "kernel") return m.kernel == d.kernel;
  if (key == "batch_norm") return m.batch_norm == d.batch_norm;
  if (key == "activation") return m.activation == d.activation;
  if (key == "recon_loss") return m.recon_loss == d.recon_loss;
  if (key == "beta") return m.beta == d.beta;
  if (key == "sigma") return m.sigma == d.sigma;
  if (key == "dropout") return m.dropout == d.dropout;
  if (key == "prior") return m.prior == d.prior;
  if (key == "prior_std") return m.prior_std == d.prior_std;
  if (key == "prior_components") return m.prior_components == d.prior_components;
  if (key == "prior_layout") return m.prior_layout == d.prior_layout;
  if (key == "prior_radius") return m.prior_radius == d.prior_radius;
  if (key == "conditional") return m.conditional == d.conditional;
  if (key == "disc_hidden") return m.disc_hidden == d.disc_hidden;
  if (key == "nae_epochs") return m.nae_epochs == d.nae_epochs;
  if (key == "nae_batches") return m.nae_batches == d.nae_batches;
  if (key == "gamma") return m.gamma == d.gamma;
  if (key == "temperature") return m.temperature == d.temperature;
  if (key == "encoder_l2") return m.encoder_l2 == d.encoder_l2;
  if (key == "buffer_size") return m.buffer_size == d.buffer_size;
  if (key == "replay_ratio") return m.replay_ratio == d.replay_ratio;
  if (key == "z_steps") return m.z_steps == d.z_steps;
  if (key == "z_step_size") return m.z_step_size == d.z_step_size;
  if (key == "z_noise") return m.z_noise == d.z_noise;
  if (key == "x_steps") return m.x_steps == d.x_steps;
  if (key == "x_step_size") return m.x_step_size == d.x_step_size;
  if (key == "x_noise") return m.x_noise == d.x_noise;
  if (key == "x_grad_clip") return m.x_grad_clip == d.x_grad_clip;
  if (key == "x_grad_clip_per") return m.x_grad_clip_per == d.x_grad_clip_per;
  if (key == "chain_groups") return m.chain_groups == d.chain_groups;
  return false;
}

/// Lists the keys of each section (for unknown-key errors).
struct KeyLister {
  std::map<std::string, std::vector<std::string>> keys;
  std::string current;
  void section(const std::string& s) { current = s; }
  template <class T>
  void operator()(const std::string& key, T&) {
    keys[current].push_back(key);
  }
};

/// Reads present keys from the YAML tree into the typed fields.
struct Parser {
  const YAML::Node& root;
  Config& config;
  std::string current;
  YAML::Node node;

  void section(const std::string& s) {
    current = s;
    node = root[s] ? root[s] : YAML::Node();
  }
  template <class T>
  void operator()(const std::string& key, T& field) {
    if (!node.IsDefined() || node.IsNull() || !node[key]) return;
    const YAML::Node value = node[key];
    const std::string full = current + "." + key;
    try {
      field = convert<T>(value);
    } catch (const YAML::Exception&) {
      throw Error(config.where(full) + ": key '" + full + "': expected " + type_name(&field) + ", got " +
                  describe(value));
    }
  }
  template <class T>
  static T convert(const YAML::Node& n) {
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
};

/// Writes every field, defaults included.
struct Emitter {
  YAML::Emitter& out;
  const ModelOptions& model;
  bool open = false;
  std::string current;
  void section(const std::string& s) {
    if (open) out << YAML::EndMap;
    out << YAML::Key << s << YAML::Value << YAML::BeginMap;
    open = true;
    current = s;
  }
  template <class T>
  void operator()(const std::string& key, T& field) {
    if (current == "model" && !unused_model_key(model, key).empty()) return;
    out << YAML::Key << key << YAML::Value;
    if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      out << YAML::Flow << field;
    } else if constexpr (std::is_same_v<T, std::string>) {
      out << YAML::DoubleQuoted << field;
    } else {
      out << field;
    }
  }
  void close() {
    if (open) out << YAML::EndMap;
  }
};

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
          v = Parser::convert<T>(kv.second);
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

  KeyLister lister;
  visit_fields(config, lister);
  // Unknown sections and keys, with their lines.
  for (const auto& sec : root) {
    const std::string s = sec.first.as<std::string>();
    const std::string line = source + ":" + std::to_string(sec.first.Mark().line + 1);
    if (s == "groups") continue;  // parsed below
    if (!lister.keys.count(s))
      throw Error(line + ": unknown section '" + s + "'; valid sections: data, model, train, flow, groups");
    if (sec.second.IsNull()) continue;
    require(sec.second.IsMap(), line + ": section '" + s + "' must be a mapping of keys");
    const auto& valid = lister.keys[s];
    for (const auto& kv : sec.second) {
      const std::string k = kv.first.as<std::string>();
      const std::string at = source + ":" + std::to_string(kv.first.Mark().line + 1);
      if (std::find(valid.begin(), valid.end(), k) == valid.end()) {
        if (const auto why = retired_key(s + "." + k, kv.second)) {
          if (why->empty() || retired == RetiredKeys::ignore) continue;  // means the same as before, or unused
          throw Error(at + ": " + *why);
        }
        std::string list;
        for (const auto& v : valid) list += (list.empty() ? "" : ", ") + v;
        throw Error(at + ": unknown key '" + s + "." + k + "'; valid keys in '" + s + "': " + list);
      }
      config.locations[s + "." + k] = at;
    }
  }
  // Command-line overrides: "section.key=value", value parsed as YAML.
  for (const auto& ov : overrides) {
    const auto eq = ov.find('=');
    const auto dot = ov.find('.');
    require(eq != std::string::npos && dot != std::string::npos && dot < eq,
            "--set '" + ov + "': expected section.key=value, e.g. train.epochs=3");
    const std::string s = ov.substr(0, dot), k = ov.substr(dot + 1, eq - dot - 1);
    if (s == "groups") {  // groups.<name>.<key>=value
      const auto dot2 = k.find('.');
      require(dot2 != std::string::npos && dot2 > 0, "--set '" + ov + "': expected groups.<group>.<key>=value");
      YAML::Node value;
      try {
        value = YAML::Load(ov.substr(eq + 1));
      } catch (const YAML::Exception&) {
        throw Error("--set '" + ov + "': value is not valid YAML");
      }
      if (!root["groups"] || root["groups"].IsNull()) root["groups"] = YAML::Node(YAML::NodeType::Map);
      auto group = root["groups"][k.substr(0, dot2)];
      if (!group || group.IsNull()) group = YAML::Node(YAML::NodeType::Map);
      group[k.substr(dot2 + 1)] = value;
      root["groups"][k.substr(0, dot2)] = group;
      config.locations["groups." + k] = "--set groups." + k;
      continue;
    }
    const auto& valid = lister.keys[s];
    if (const auto why = retired_key(s + "." + k, YAML::Node()))  // a null value: always the message
      throw Error("--set '" + ov + "': " + *why);
    require(lister.keys.count(s) && std::find(valid.begin(), valid.end(), k) != valid.end(),
            "--set '" + ov + "': unknown key '" + s + "." + k + "'");
    YAML::Node value;
    try {
      value = YAML::Load(ov.substr(eq + 1));
    } catch (const YAML::Exception&) {
      throw Error("--set '" + ov + "': value is not valid YAML");
    }
    if (!root[s] || root[s].IsNull()) root[s] = YAML::Node(YAML::NodeType::Map);
    root[s][k] = value;
    config.locations[s + "." + k] = "--set " + s + "." + k;
    config.sections.insert(s);
  }
  Parser parser{root, config, "", YAML::Node()};
  visit_fields(config, parser);
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
  static const std::set<std::string> train_keys = {"epochs",
                                                   "lr",
                                                   "lr_schedule",
                                                   "lr_decay_epoch",
                                                   "lr_decay",
                                                   "warmup_epochs",
                                                   "patience",
                                                   "threads",
                                                   "blas_threads",
                                                   "device",
                                                   "eval_batch_size",
                                                   "num_samples",
                                                   "save_latents",
                                                   "nonfinite",
                                                   "divergence_check",
                                                   "grad_clip",
                                                   "model_checkpoint",
                                                   "weight_decay",
                                                   "momentum",
                                                   "distributed_backend",
                                                   "distributed_timeout_s",
                                                   "checkpoint_every"};
  static const std::set<std::string> group_keys = {
      "lr", "lr_schedule", "lr_decay_epoch", "lr_decay", "warmup_epochs", "grad_clip", "weight_decay", "momentum"};
  static const std::set<std::string> model_keys = {"nae_epochs", "nae_batches"};  // phase lengths
  const auto dot = key.find('.');
  const std::string section = key.substr(0, dot), rest = dot == std::string::npos ? "" : key.substr(dot + 1);
  if (section == "train") return train_keys.count(rest) > 0;
  if (section == "data") return rest == "root";  // where the same files are (another machine)
  if (section == "model") return model_keys.count(rest) > 0;
  if (section == "groups") {
    const auto dot2 = rest.find('.');
    return dot2 != std::string::npos && group_keys.count(rest.substr(dot2 + 1)) > 0;
  }
  return false;
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
  YAML::Emitter out;
  out << YAML::BeginMap;
  Emitter emitter{out, config.model};
  visit_fields(const_cast<Config&>(config), emitter);
  emitter.close();
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

void validate(const Config& c) {
  auto check = [&](bool ok, const std::string& key, const std::string& expected, const std::string& got) {
    if (!ok) throw Error(c.where(key) + ": key '" + key + "': expected " + expected + ", got " + got);
  };
  auto in = [](const std::string& v, std::initializer_list<const char*> options) {
    for (const char* o : options)
      if (v == o) return true;
    return false;
  };
  for (const auto& [name, g] : c.groups) {
    const std::string k = "groups." + name + ".";
    if (g.optimizer)
      check(in(*g.optimizer, {"adam", "adamw", "sgd"}), k + "optimizer", "adam, adamw or sgd",
            "'" + *g.optimizer + "'");
    if (g.lr) check(*g.lr > 0, k + "lr", "a positive number", std::to_string(*g.lr));
    if (g.momentum)
      check(*g.momentum >= 0 && *g.momentum < 1, k + "momentum", "a number in [0, 1)", std::to_string(*g.momentum));
    if (g.weight_decay)
      check(*g.weight_decay >= 0, k + "weight_decay", "a number >= 0", std::to_string(*g.weight_decay));
    if (g.lr_schedule)
      check(in(*g.lr_schedule, {"constant", "cosine", "step"}), k + "lr_schedule", "constant, cosine or step",
            "'" + *g.lr_schedule + "'");
    if (g.warmup_epochs)
      check(*g.warmup_epochs >= 0, k + "warmup_epochs", "an integer >= 0", std::to_string(*g.warmup_epochs));
    if (g.lr_decay_epoch)
      check(*g.lr_decay_epoch >= 0, k + "lr_decay_epoch", "an integer >= 0", std::to_string(*g.lr_decay_epoch));
    if (g.lr_decay) check(*g.lr_decay > 0, k + "lr_decay", "a positive number", std::to_string(*g.lr_decay));
    if (g.grad_clip) check(*g.grad_clip >= 0, k + "grad_clip", "a number >= 0 (0 = off)", std::to_string(*g.grad_clip));
  }
  const auto& d = c.data;
  const auto& m = c.model;
  const auto& t = c.train;
  check(d.val_size >= 0, "data.val_size", "an integer >= 0", std::to_string(d.val_size));
  check(d.train_from.empty() || d.train_from == "test", "data.train_from", "test (or nothing)",
        "'" + d.train_from + "'");
  check(d.subset >= 0, "data.subset", "an integer >= 0 (0 = all)", std::to_string(d.subset));
  check(d.channels == 0 || d.channels == 1 || d.channels == 3, "data.channels", "0, 1 or 3",
        std::to_string(d.channels));
  check(d.image_size >= 0, "data.image_size", "an integer >= 0", std::to_string(d.image_size));
  check(d.shift >= 0, "data.shift", "an integer >= 0", std::to_string(d.shift));
  check(d.synthetic_size > 0, "data.synthetic_size", "a positive integer", std::to_string(d.synthetic_size));
  check(in(m.arch, {"mlp", "conv"}), "model.arch", "mlp or conv", "'" + m.arch + "'");
  for (const auto& [key, where] : c.locations) {
    if (key.rfind("model.", 0) != 0) continue;
    const auto why = unused_model_key(m, key.substr(6));
    // A default value changes nothing (resolved configs of earlier versions list every key).
    if (!why.empty() && !is_default_model_value(m, key.substr(6)))
      throw Error(where + ": key '" + key + "' is not used by model.type '" + m.type + "' (arch '" + m.arch +
                  "'): " + why + "; remove it");
  }
  // Upper limits: sizes beyond them end in an allocation failure far from the key that caused it.
  constexpr int64_t kMaxWidth = 1 << 16;
  check(m.latent_dim > 0 && m.latent_dim <= kMaxWidth, "model.latent_dim", "an integer in [1, 65536]",
        std::to_string(m.latent_dim));
  for (auto h : m.hidden) check(h > 0 && h <= kMaxWidth, "model.hidden", "widths in [1, 65536]", std::to_string(h));
  for (auto ch : m.channels)
    check(ch > 0 && ch <= kMaxWidth, "model.channels", "widths in [1, 65536]", std::to_string(ch));
  check(!m.channels.empty() || m.arch != "conv", "model.channels", "at least one conv width", "[]");
  check(m.kernel >= 2 && m.kernel <= 15, "model.kernel", "a kernel size in [2, 15]", std::to_string(m.kernel));
  check(in(m.activation, {"relu", "leaky_relu", "elu", "silu"}), "model.activation", "relu, leaky_relu, elu or silu",
        "'" + m.activation + "'");
  check(in(m.recon_loss, {"mse", "bce", "bernoulli", "gaussian"}), "model.recon_loss",
        "mse, bce, bernoulli or gaussian", "'" + m.recon_loss + "'");
  check(m.beta >= 0, "model.beta", "a number >= 0", std::to_string(m.beta));
  check(m.sigma > 0, "model.sigma", "a positive number", std::to_string(m.sigma));
  check(m.dropout >= 0 && m.dropout < 1, "model.dropout", "a number in [0, 1)", std::to_string(m.dropout));
  check(in(m.prior, {"gaussian", "mixture"}), "model.prior", "gaussian or mixture", "'" + m.prior + "'");
  check(m.prior_std > 0, "model.prior_std", "a positive number", std::to_string(m.prior_std));
  check(m.prior_components >= 1, "model.prior_components", "a positive integer", std::to_string(m.prior_components));
  check(in(m.prior_layout, {"circle", "random"}), "model.prior_layout", "circle or random", "'" + m.prior_layout + "'");
  check(m.prior_radius >= 0, "model.prior_radius", "a number >= 0", std::to_string(m.prior_radius));
  for (auto h : m.disc_hidden) check(h > 0, "model.disc_hidden", "positive widths", std::to_string(h));
  check(m.nae_epochs >= 0, "model.nae_epochs", "an integer >= 0", std::to_string(m.nae_epochs));
  check(m.nae_batches >= 0, "model.nae_batches", "an integer >= 0 (0: a full pass)", std::to_string(m.nae_batches));
  check(m.gamma >= 0, "model.gamma", "a number >= 0", std::to_string(m.gamma));
  check(m.temperature > 0, "model.temperature", "a positive number", std::to_string(m.temperature));
  check(m.encoder_l2 >= 0, "model.encoder_l2", "a number >= 0", std::to_string(m.encoder_l2));
  check(m.buffer_size >= 1, "model.buffer_size", "a positive integer", std::to_string(m.buffer_size));
  check(m.replay_ratio >= 0 && m.replay_ratio <= 1, "model.replay_ratio", "a number in [0, 1]",
        std::to_string(m.replay_ratio));
  check(m.z_steps >= 0 && m.x_steps >= 0, m.z_steps < 0 ? "model.z_steps" : "model.x_steps", "an integer >= 0",
        "a negative number");
  check(m.z_step_size >= 0 && m.x_step_size >= 0, m.z_step_size < 0 ? "model.z_step_size" : "model.x_step_size",
        "a number >= 0", "a negative number");
  check(m.z_noise >= 0 && m.x_noise >= 0, m.z_noise < 0 ? "model.z_noise" : "model.x_noise", "a number >= 0",
        "a negative number");
  check(m.x_grad_clip >= 0, "model.x_grad_clip", "a number >= 0 (0 = off)", std::to_string(m.x_grad_clip));
  check(in(m.x_grad_clip_per, {"sample", "row"}), "model.x_grad_clip_per", "sample or row",
        "'" + m.x_grad_clip_per + "'");
  check(m.chain_groups >= 1, "model.chain_groups", "a positive integer", std::to_string(m.chain_groups));
  check(t.epochs >= 1, "train.epochs", "a positive integer", std::to_string(t.epochs));
  check(t.batch_size >= 1, "train.batch_size", "a positive integer", std::to_string(t.batch_size));
  check(t.lr > 0, "train.lr", "a positive number", std::to_string(t.lr));
  check(in(t.lr_schedule, {"constant", "cosine", "step"}), "train.lr_schedule", "constant, cosine or step",
        "'" + t.lr_schedule + "'");
  check(in(t.optimizer, {"adam", "adamw", "sgd"}), "train.optimizer", "adam, adamw or sgd", "'" + t.optimizer + "'");
  check(t.momentum >= 0 && t.momentum < 1, "train.momentum", "a number in [0, 1)", std::to_string(t.momentum));
  check(t.warmup_epochs >= 0, "train.warmup_epochs", "an integer >= 0", std::to_string(t.warmup_epochs));
  check(in(t.model_checkpoint, {"best", "last"}), "train.model_checkpoint", "best or last",
        "'" + t.model_checkpoint + "'");
  check(t.latent_noise_std >= 0, "train.latent_noise_std", "a number >= 0 (in units of each latent's std)",
        std::to_string(t.latent_noise_std));
  check(t.ema >= 0 && t.ema < 1, "train.ema", "a decay in [0, 1) (0 = off)", std::to_string(t.ema));
  check(t.patience >= 0, "train.patience", "an integer >= 0 (0 = off)", std::to_string(t.patience));
  check(in(t.nonfinite, {"stop", "skip", "reduce_lr"}), "train.nonfinite", "stop, skip or reduce_lr",
        "'" + t.nonfinite + "'");
  check(t.lr_decay_epoch >= 0, "train.lr_decay_epoch", "an integer >= 0", std::to_string(t.lr_decay_epoch));
  check(t.lr_decay > 0, "train.lr_decay", "a positive number", std::to_string(t.lr_decay));
  check(in(t.dtype, {"float32", "float64"}), "train.dtype", "float32 or float64", "'" + t.dtype + "'");
  check(in(t.distributed_backend, {"auto", "gloo", "nccl"}), "train.distributed_backend", "auto, gloo or nccl",
        "'" + t.distributed_backend + "'");
  check(t.distributed_timeout_s > 0, "train.distributed_timeout_s", "a positive number of seconds",
        std::to_string(t.distributed_timeout_s));
  parse_checkpoint_every(t.checkpoint_every);
  const auto& f = c.flow;
  check(in(f.type, {"nsf", "realnvp"}), "flow.type", "nsf or realnvp", "'" + f.type + "'");
  check(f.layers >= 1, "flow.layers", "a positive integer", std::to_string(f.layers));
  check(f.hidden >= 1 && f.hidden <= kMaxWidth, "flow.hidden", "an integer in [1, 65536]", std::to_string(f.hidden));
  check(f.hidden_layers >= 1, "flow.hidden_layers", "a positive integer", std::to_string(f.hidden_layers));
  check(in(f.conditioner, {"mlp", "resnet"}), "flow.conditioner", "mlp or resnet", "'" + f.conditioner + "'");
  check(f.bins >= 2, "flow.bins", "an integer >= 2", std::to_string(f.bins));
  check(in(f.tails, {"linear", "asinh"}), "flow.tails", "linear or asinh", "'" + f.tails + "'");
  check(f.dropout >= 0 && f.dropout < 1, "flow.dropout", "a number in [0, 1)", std::to_string(f.dropout));
  check(f.dropout_anneal > 0 && f.dropout_anneal <= 1, "flow.dropout_anneal", "a fraction of the epochs in (0, 1]",
        std::to_string(f.dropout_anneal));
  check(f.tail_bound > 0, "flow.tail_bound", "a positive number", std::to_string(f.tail_bound));
  check(f.min_bin_width > 0 && f.min_bin_width * double(f.bins) < 1, "flow.min_bin_width", "0 < width < 1/bins",
        std::to_string(f.min_bin_width));
  check(f.min_bin_height > 0 && f.min_bin_height * double(f.bins) < 1, "flow.min_bin_height", "0 < height < 1/bins",
        std::to_string(f.min_bin_height));
  check(f.min_derivative > 0 && f.min_derivative < 1, "flow.min_derivative", "a number in (0, 1)",
        std::to_string(f.min_derivative));
  check(in(f.permutation, {"reverse", "random", "lu"}), "flow.permutation", "reverse, random or lu",
        "'" + f.permutation + "'");
  check(t.weight_decay >= 0, "train.weight_decay", "a number >= 0", std::to_string(t.weight_decay));
  check(t.grad_clip >= 0, "train.grad_clip", "a number >= 0 (0 = off)", std::to_string(t.grad_clip));
  // More threads than 4 per core only spin (100,000 hung the machine).
  const int64_t max_threads = 4 * int64_t(std::max(1u, std::thread::hardware_concurrency()));
  check(t.threads >= 0 && t.threads <= max_threads, "train.threads",
        "an integer in [0, " + std::to_string(max_threads) + "] (0 = all cores; 4 per core at most)",
        std::to_string(t.threads));
  check(t.blas_threads >= 0 && t.blas_threads <= max_threads, "train.blas_threads",
        "an integer in [0, " + std::to_string(max_threads) + "] (0 = 1)", std::to_string(t.blas_threads));
  check(t.eval_batch_size >= 1, "train.eval_batch_size", "a positive integer", std::to_string(t.eval_batch_size));
  check(t.num_samples >= 1, "train.num_samples", "a positive integer", std::to_string(t.num_samples));
}

}  // namespace pae
