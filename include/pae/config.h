// Experiment configuration: YAML -> typed options, once, at the edge.
//
// A config has three sections, `data`, `model` and `train`. Unknown keys, wrong types and
// out-of-range values are errors naming the file, line and key. `--set section.key=value`
// overrides any key; the resolved config (defaults filled in) is written into the run directory.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "pae/data/dataset.h"
#include "pae/flows/options.h"
#include "pae/models/options.h"

namespace pae {

/// The `train` section: optimisation and run settings.
struct TrainOptions {
  int64_t epochs = 10;
  int64_t batch_size = 128;
  std::string optimizer = "adam";  ///< adam | adamw | sgd (every parameter group)
  double lr = 1e-3;
  double momentum = 0.9;                  ///< sgd
  std::string lr_schedule = "constant";   ///< constant | cosine | step
  int64_t warmup_epochs = 0;              ///< linear warm-up before the schedule
  int64_t lr_restart_epochs = 0;          ///< cosine: restart every this many epochs (0 = one cosine over the run)
  std::string model_checkpoint = "best";  ///< the run's model, from which every output is made: best | last
  double weight_decay = 0.0;
  double grad_clip = 0.0;  ///< max gradient norm (0 = off)
  double ema = 0.0;        ///< Polyak averaging decay per step (0 = off): the model validated and saved
  uint64_t seed = 0;
  int64_t threads = 0;         ///< LibTorch intra-op threads (0 = every available core)
  int64_t blas_threads = 0;    ///< OpenBLAS threads (0 = 1: avoids oversubscription)
  std::string device = "cpu";  ///< cpu | cuda | cuda:N | auto
  int64_t eval_batch_size = 1000;
  int64_t num_samples = 64;  ///< images in the sample / reconstruction grids
  bool save_latents = true;  ///< encode train/val/test at the end
  // Flow fitting (pae-flow) only:
  /// Std of the Gaussian noise added to latents while fitting, in units of each latent
  /// dimension's std (the noise is applied to the standardised latents the flow sees).
  double latent_noise_std = 0.0;
  int64_t patience = 0;  ///< early stopping: epochs without validation gain (0 = off)
  /// A non-finite loss or gradient: "stop" (an error naming epoch, step and group; the last
  /// checkpoint stays), "skip" (no update; counted as nonfinite_steps in the metrics) or
  /// "reduce_lr" (skip, count, and halve the group's learning rate from then on).
  std::string nonfinite = "stop";
  /// After training, refuse a model that reconstructs worse than the training set's mean image.
  bool divergence_check = true;
  int64_t lr_decay_epoch = 0;  ///< lr_schedule step: multiply lr by lr_decay from this epoch
  double lr_decay = 0.1;
  std::string dtype = "float32";  ///< flows: float32 | float64
  /// Data-parallel runs (torchrun's environment): auto | gloo | nccl, and how long a rank waits for
  /// the others (joining, and each collective) before it stops with an error.
  std::string distributed_backend = "auto";
  double distributed_timeout_s = 300;
  /// Checkpoints inside an epoch (RUN/checkpoints/mid_epoch.pt, which --resume continues from):
  /// "0" (off), "N" or "N steps" (every N optimizer steps), "N min" (every N minutes).
  std::string checkpoint_every = "0";

  /// Every key of the `train` section.
  void visit(OptionVisitor& v);
};

/// train.checkpoint_every, read: every `steps` steps and/or `minutes` minutes (0: not by that).
struct CheckpointEvery {
  int64_t steps = 0;
  double minutes = 0;
};
/// An error naming train.checkpoint_every and the text unless it is one of its forms.
CheckpointEvery parse_checkpoint_every(const std::string& text);

/// One parameter group's departures from the train section (`groups.<name>.<key>`): only the
/// keys given replace the train section's for that group's optimizer and schedule.
struct GroupOptions {
  std::optional<std::string> optimizer, lr_schedule;
  std::optional<double> lr, momentum, weight_decay, lr_decay, grad_clip;
  std::optional<int64_t> warmup_epochs, lr_decay_epoch;
};

struct Config {
  data::DataOptions data;
  ModelOptions model;
  TrainOptions train;
  flows::FlowOptions flow;  ///< the `flow` section (pae-flow)
  /// The `groups` section: per-parameter-group optimizer overrides (e.g. an AAE's `disc`).
  std::map<std::string, GroupOptions> groups;
  std::string source;  ///< file it was read from
  /// "file:line" (or "--set") of every key given, e.g. locations["train.epochs"].
  std::map<std::string, std::string> locations;
  /// The sections the file or a --set gave (not those left entirely to defaults).
  std::set<std::string> sections;

  /// Where `key` ("section.key") was set, for error messages ("default" if never set).
  std::string where(const std::string& key) const;
};

/// Parses YAML text (`source` names it in errors), then applies "section.key=value" overrides.
/// Keys whose meaning changed (train.latent_noise): `refuse` (a config to train or resume under)
/// is an error that names the replacement; `ignore` reads a finished run's config.yml for
/// evaluation, which does not use them.
enum class RetiredKeys { refuse, ignore };
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {}, RetiredKeys retired = RetiredKeys::refuse);

/// Reads and parses a config file.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {},
                   RetiredKeys retired = RetiredKeys::refuse);

/// The resolved config as YAML, every key written out (parse_config round-trips it).
std::string to_yaml(const Config& config);

/// Checks the value ranges; errors name file, line and key.
void validate(const Config& config);

/// A key whose value differs between two resolved configs.
struct ConfigChange {
  std::string key;            ///< "section.key" (groups: "groups.<name>.<key>")
  std::string before, after;  ///< the values as YAML text ("(absent)" when a side lacks the key)
};

/// The keys whose values differ between two configs given as YAML (to_yaml text), sorted.
std::vector<ConfigChange> config_changes(const std::string& before_yaml, const std::string& after_yaml);

/// The changes from a run's stored config (`source` names it in errors) to `now`, the stored one
/// read as this version reads it: a key added since the run started is absent there and means
/// its default (every new key defaults to the behaviour before it); a retired key that changed
/// meaning is an error with its own message.
std::vector<ConfigChange> changes_since(const std::string& stored_yaml, const std::string& source, const Config& now);

/// Whether a resumed run may change `key`: how long, how fast and where it trains (epochs,
/// learning rates and schedules, patience, threads, device, the data's folder, ...), not what it
/// trains or on which data (architecture, dataset, seed, batch size, optimizer, flow).
bool may_change_on_resume(const std::string& key);

/// An error naming the file unless the file gave each of `needed` (a program given another
/// program's config, or an empty file, must not run on defaults). `hint` follows the message.
void require_sections(const Config& config, const std::vector<std::string>& needed, const std::string& program,
                      const std::string& hint = "");

}  // namespace pae
