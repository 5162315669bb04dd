// One function per evaluation: options in, report struct out; the report serialises itself
// to JSON (with the protocol it used) and writes its files. pae-eval only parses flags.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "pae/eval/evaluate.h"
#include "pae/eval/features.h"
#include "pae/eval/ood_scores.h"
#include "pae/eval/pae.h"
#include "pae/metrics/fid.h"
#include "pae/metrics/parzen.h"
#include "pae/util/fs.h"

namespace pae::eval {

/// An evaluation's output folder (created) while report `name` is made in it: held (OUT/.eval.lock)
/// so that a second evaluation into the folder is refused, and an existing report is replaced
/// only with `force`.
class ReportFolder {
 public:
  ReportFolder(const std::string& out_dir, const std::string& name, bool force);
  /// OUT/name.
  const std::string& path() const { return path_; }

 private:
  FolderLock lock_;
  std::string path_;
};

// ---------------------------------------------------------------- OoD detection

struct OodOptions {
  std::string in;                   ///< in-distribution set; empty: the AE's own dataset, test split
  std::vector<std::string> ood;     ///< OoD sets: name[:split], npy:PATH, folder:PATH, noise, ...
  std::vector<std::string> scores;  ///< empty: every single score (OodScorer); tails:a+b adds a combination
  int64_t limit = 0;                ///< first N images of each set (0 = all)
  /// Validation transforms (validation_transforms()) to choose a score on: empty, no choice. The
  /// candidates are `scores` (all single scores when empty) and their pairwise combinations.
  std::vector<std::string> select_on;
  double select_fpr = 0.05;  ///< the chosen score's threshold flags this fraction of validation images
};

struct OodReport {
  std::string in;
  std::string pixel_sigma;               ///< where neg_log_p_x's residual sigma came from (empty: no such score)
  std::string tail_reference;            ///< the reference images of the tail and typicality scores
  std::vector<std::string> sets;         ///< OoD sets, in order
  std::map<std::string, int64_t> sizes;  ///< images per set (in included)
  std::map<std::string, std::map<std::string, at::Tensor>> scores;  ///< set -> score -> [N] float64
  std::vector<OodResult> rows;
  // With --select-on: what the score was chosen on, the choice, and its threshold on the reported sets.
  std::string validation_in;                                         ///< the in-distribution validation images
  std::vector<std::pair<std::string, std::string>> validation_sets;  ///< (transform, what it does)
  ScoreChoice choice;                                                ///< chosen empty without --select-on
  std::map<std::string, double> flagged;  ///< reported set -> fraction above the chosen threshold
  double seconds_load = 0, seconds_scores = 0, seconds_total = 0;
  int64_t limit = 0;
  nlohmann::json to_json(const Pae& pae) const;
  /// ood.md: the AUROC table, and with a choice what it was chosen on and how it does.
  std::string markdown() const;
  /// ood.json, ood.md, roc_<score>.svg, scores/<set>__<score>.npy.
  void write(const Pae& pae, const std::string& out_dir) const;
};

/// Scores every image of the in-distribution set and of every OoD set; every set is loaded
/// (and checked) before any scoring starts. With select_on, the score is first chosen on the
/// second half of the AE's validation split and its transformations: the reported sets play no part.
OodReport run_ood(Pae& pae, const OodOptions& options);

// ---------------------------------------------------------------- reconstruction

struct ReconReport {
  std::string set;
  int64_t images = 0;
  double mse = 0;                           ///< per pixel, pixels in [0, 1]
  std::map<std::string, double> per_image;  ///< p05, p25, median, p75, p95, max
  at::Tensor per_image_mse;                 ///< [N] float64
  nlohmann::json to_json(const Pae& pae) const;
};

ReconReport run_recon(Pae& pae, const std::string& split, int64_t limit = 0);

// ---------------------------------------------------------------- Parzen window

struct ParzenOptions {
  int64_t samples = 10000, val = 1000, limit = 0;
  double sigma_min = 0.05, sigma_max = 1.0;
  int64_t sigma_steps = 20;
};

struct ParzenReport {
  std::string generator, test_set;
  int64_t samples = 0, validation_images = 0, test_images = 0;
  metrics::ParzenResult result;
  nlohmann::json to_json(const Pae& pae) const;
};

/// The AAE paper's protocol: a Gaussian Parzen window on generated images (PAE samples with a
/// flow, decoded N(0, I) codes without), sigma chosen on validation images, test mean and SE.
ParzenReport run_parzen(Pae& pae, const ParzenOptions& options);

// ---------------------------------------------------------------- Fréchet distance

/// A generated image set for FID, by name: recon | flow[:T] | prior | data | npy:FILE (pae-eval fid
/// also takes flow:auto: run_fid chooses its temperature).
struct GeneratedSet {
  at::Tensor images;
  std::string what;  ///< how it was made, for the report
};
struct GenerateOptions {
  int64_t n = 10000;
  std::string recon_split = "train";  ///< split reconstructed for "recon" (and used for "data")
  double temperature = 1.0;           ///< of PAE samples ("flow")
};
using SetGenerator = std::function<GeneratedSet(Pae&, const GenerateOptions&, const std::string& argument)>;
/// Explicit registry of generated sets (names; "npy" takes FILE after the colon).
const std::map<std::string, SetGenerator>& generated_sets();
GeneratedSet generate_set(const std::string& spec, Pae& pae, const GenerateOptions& options);

struct ExtractorOptions {
  std::string classifier_dir;     ///< domain: default runs/classifiers/<dataset>
  std::string inception_weights;  ///< inception: converted pytorch-fid weights
  std::string protocol = "pae";   ///< inception preprocessing: pae | plain
};
using ExtractorFactory = std::function<std::shared_ptr<FeatureExtractor>(const Pae&, const ExtractorOptions&)>;
/// Explicit registry of feature extractors: domain | inception.
const std::map<std::string, ExtractorFactory>& extractors();
std::shared_ptr<FeatureExtractor> make_extractor(const std::string& name, const Pae& pae,
                                                 const ExtractorOptions& options);

/// Sampling temperature as an explicit choice made on held-out images (`--sets flow:auto`): the T
/// of `grid` whose PAE samples (n of them, drawn with seed 1, so that the reported sets, drawn with
/// seed 0, are not the ones chosen on) have the lowest FID against `reference` images, in
/// pae-eval fid the AE's validation split. The flow fits log p(z); the decoder and the feature
/// space decide which T gives images closest to the data, so the choice is measured, not assumed.
struct TemperatureChoice {
  double temperature = 1;
  std::vector<std::pair<double, double>> fid;  ///< (T, FID against the reference), over the grid
  std::string reference;                       ///< what the reference images were
  bool at_edge = false;                        ///< the lowest FID is at an end of the grid
};
/// 0.5, 0.6, ..., 2.0.
std::vector<double> default_temperature_grid();
TemperatureChoice choose_temperature(Pae& pae, FeatureExtractor& extractor, const at::Tensor& reference,
                                     const std::string& reference_name, const std::vector<double>& grid, int64_t n,
                                     int64_t min_samples);

struct FidOptions {
  std::vector<std::string> sets;  ///< empty: recon, prior (and flow with a flow)
  std::string ref = "test";
  std::string extractor = "domain";
  ExtractorOptions extractor_options;
  GenerateOptions generate;
  int64_t min_samples = 1000;
};

struct FidRow {
  std::string set, what;
  metrics::FrechetParts parts;
  int64_t samples = 0;
  TemperatureChoice choice;  ///< flow:auto: how its temperature was chosen (fid empty otherwise)
};
struct FidReport {
  std::string extractor, reference;
  int64_t reference_samples = 0;
  std::vector<FidRow> rows;
  nlohmann::json to_json(const Pae& pae) const;
  std::string markdown() const;
};

FidReport run_fid(Pae& pae, const FidOptions& options);

// ---------------------------------------------------------------- pae-eval's report files

/// pae-eval ood / recon / fid / parzen: run the measurement, write its report files into `dir`
/// (refusing to replace a report unless `force`), log where they went, and return the text the
/// program prints.
std::string write_ood(Pae& pae, const OodOptions& options, const std::string& dir, bool force);
std::string write_recon(Pae& pae, const std::string& split, int64_t limit, const std::string& dir, bool force);
std::string write_fid(Pae& pae, const FidOptions& options, const std::string& dir, bool force);
std::string write_parzen(Pae& pae, const ParzenOptions& options, const std::string& dir, bool force);

}  // namespace pae::eval
