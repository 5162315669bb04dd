#include "pae/eval/reports.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "pae/data/npy.h"
#include "pae/eval/restore.h"
#include "pae/metrics/ood.h"
#include "pae/models/autoencoder.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/text.h"

namespace pae::eval {

using nlohmann::json;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

/// The runs a report was made from.
json runs_of(const Pae& pae) {
  return {{"ae_run", pae.ae_run()}, {"checkpoint", pae.checkpoint()}, {"flow", pae.flow_run()}};
}

}  // namespace

namespace {

fs::path created(const std::string& dir) {
  ensure_dir(dir);
  return dir;
}

}  // namespace

ReportFolder::ReportFolder(const std::string& out_dir, const std::string& name, bool force)
    : lock_(created(out_dir), ".eval.lock", "evaluation folder",
            "wait for that evaluation to end, or write elsewhere with -o"),
      path_((fs::path(out_dir) / name).string()) {
  require(force || !fs::exists(path_), path_ + " exists: pass --force to replace it, or -o another directory");
}

// ---------------------------------------------------------------- OoD

namespace {

/// The AE's validation split cut in two: the reference of the tail and typicality scores (first
/// half) and the in-distribution images the score is chosen on (second half).
std::pair<data::Dataset, data::Dataset> validation_halves(const Pae& pae) {
  auto val = load_set(pae.config().data.name + ":val", pae.config(), pae.image_shape(), 0);
  require(val.size() >= 2, val.name + ": the OoD scores need at least 2 validation images (data.val_size)");
  const int64_t half = val.size() / 2;
  data::Dataset reference = val, held = val;
  reference.images = val.images.slice(0, 0, half);
  held.images = val.images.slice(0, half);
  reference.name = val.name + "[0:" + std::to_string(half) + "]";
  held.name = val.name + "[" + std::to_string(half) + ":" + std::to_string(val.size()) + "]";
  return {reference, held};
}

/// The threshold's rates on the reported sets: the in-distribution images flagged, each OoD set's.
std::map<std::string, double> flagged_fractions(const std::map<std::string, ScoreMap>& scores, const std::string& score,
                                                double threshold) {
  std::map<std::string, double> out;
  for (const auto& [set, s] : scores) out[set] = (s.at(score) > threshold).to(torch::kFloat64).mean().item<double>();
  return out;
}

}  // namespace

OodReport run_ood(Pae& pae, const OodOptions& o) {
  const double t0 = now();
  OodReport r;
  r.limit = o.limit;
  r.in = o.in.empty() ? pae.config().data.name + ":test" : o.in;
  require(!o.ood.empty(), "--ood: no OoD set given (e.g. --ood mnist:test,noise)");
  const auto shape = pae.image_shape();
  auto in = load_set(r.in, pae.config(), shape, o.limit);
  r.sizes[r.in] = in.size();
  std::vector<data::Dataset> sets;
  for (const auto& spec : o.ood) {
    sets.push_back(load_set(spec, pae.config(), shape, o.limit));
    r.sizes[spec] = sets.back().size();
    r.sets.push_back(spec);
  }
  std::vector<const ImageTransform*> transforms;
  for (const auto& name : o.select_on) transforms.push_back(&validation_transform(name));
  require(transforms.empty() || (shape.at(1) >= 4 && shape.at(2) >= 4),
          "--select-on: the validation transforms need images (at least 4x4), not vectors");
  // The data likelihood needs the residual sigma, measured on held-out images (stored with the run).
  if (pae.has_flow()) {
    std::string source;
    const auto sigma = stored_residual_sigma(pae, 2000, &source);
    pae.set_pixel_sigma(sigma, source);
    r.pixel_sigma = source;
  }
  const auto [reference, held] = validation_halves(pae);
  const bool views = o.scores.empty() || std::any_of(o.scores.begin(), o.scores.end(), [](const std::string& s) {
                       return s.size() > 6 && s.compare(s.size() - 6, 6, "_views") == 0;
                     });
  const OodScorer scorer(pae, reference.images, reference.name + " (" + std::to_string(reference.size()) + " images)",
                         views);
  r.tail_reference = scorer.reference_name();
  // The scores asked for (all single scores by default), by name; a combination tails:a+b is made here.
  const auto scored = [&](const at::Tensor& images, const std::string& set) {
    auto all = scorer(images);
    if (o.scores.empty()) return all;
    ScoreMap keep;
    for (const auto& w : o.scores) {
      if (OodScorer::is_combination(w)) {
        keep[w] = scorer.combined(w, all);
        continue;
      }
      std::vector<std::string> names;
      for (const auto& [k, v] : all) names.push_back(k);
      require(all.count(w), "--scores: no score '" + w + "' for " + set + " (available: " + joined(names, ", ") + ")");
      keep[w] = all.at(w);
    }
    return keep;
  };
  // Unknown score names fail before the long work.
  if (!o.scores.empty()) scored(in.images.slice(0, 0, 2), r.in);
  const double t_load = now();
  if (!transforms.empty()) {
    // The choice sees the held-out validation half and its transformations, nothing reported.
    ScoreMap held_scores = scored(held.images, held.name);
    std::map<std::string, ScoreMap> transformed;
    for (const auto* t : transforms) {
      transformed[t->name] = scored(t->apply(held.images), t->name);
      r.validation_sets.push_back({t->name, t->what});
    }
    r.validation_in = held.name + " (" + std::to_string(held.size()) + " images)";
    r.choice = choose_score(scorer, held_scores, transformed, o.select_fpr);
  }
  const auto with_choice = [&](ScoreMap s) {
    if (!r.choice.chosen.empty() && !s.count(r.choice.chosen)) s[r.choice.chosen] = scorer.combined(r.choice.chosen, s);
    return s;
  };
  r.scores[r.in] = with_choice(scored(in.images, r.in));
  std::map<std::string, ScoreMap> out_scores;
  for (const auto& set : sets) out_scores[set.name] = r.scores[set.name] = with_choice(scored(set.images, set.name));
  const double t_scores = now();
  r.rows = ood_table(r.scores[r.in], out_scores);
  if (!r.choice.chosen.empty()) r.flagged = flagged_fractions(r.scores, r.choice.chosen, r.choice.threshold);
  r.seconds_load = t_load - t0;
  r.seconds_scores = t_scores - t_load;
  r.seconds_total = now() - t0;
  return r;
}

json OodReport::to_json(const Pae& pae) const {
  json protocol = runs_of(pae);
  protocol.update({{"in", in},
                   {"positive_class", "OoD (higher score = more anomalous)"},
                   {"auroc", "Mann-Whitney U / (n_in n_out), ties count one half"},
                   {"average_precision", "sum over distinct thresholds of recall step x precision"},
                   {"fpr_at_tpr", 0.95},
                   {"neg_log_p_x", "-(log p(z) + log N(x; decoder(z), sigma^2)), sigma per pixel: " +
                                       (pixel_sigma.empty() ? std::string("not computed") : pixel_sigma)},
                   {"either_tail",
                    "-log min(p_z, p_residual), each term of neg_log_p_x (-log p(z) and the residual's NLL) as its "
                    "upper-tail probability among the reference images, +1 smoothed: flags what either term finds "
                    "atypical; a test, not a likelihood"},
                   {"reference", tail_reference.empty() ? std::string("(not computed)") : tail_reference},
                   {"derived_scores", OodScorer::descriptions()},
                   {"limit_per_set", limit}});
  json results = json::array();
  for (const auto& row : rows)
    results.push_back({{"set", row.set},
                       {"score", row.score},
                       {"auroc", row.auroc},
                       {"average_precision", row.average_precision},
                       {"fpr_at_95_tpr", row.fpr_at_95_tpr},
                       {"n_in", row.n_in},
                       {"n_out", row.n_out}});
  json j = {{"protocol", protocol},
            {"sizes", sizes},
            {"seconds", {{"load", seconds_load}, {"scores", seconds_scores}, {"total", seconds_total}}},
            {"results", results}};
  if (!choice.chosen.empty()) {
    json sets = json::array(), candidates = json::array();
    for (const auto& [name, what] : validation_sets) sets.push_back({{"name", name}, {"what", what}});
    for (const auto& c : choice.candidates)
      candidates.push_back({{"score", c.score}, {"mean_auroc", c.mean}, {"min_auroc", c.min}, {"auroc", c.auroc}});
    j["selection"] = {{"in", validation_in},
                      {"validation_sets", sets},
                      {"criterion", "highest mean AUROC over the validation sets (ties: higher minimum)"},
                      {"reported_sets_used", false},
                      {"chosen", choice.chosen},
                      {"threshold", choice.threshold},
                      {"threshold_rule", fmt::format("flags at most {:g} of the validation in-distribution images "
                                                     "(score > threshold)",
                                                     choice.fpr)},
                      {"flagged_on_reported_sets", flagged},
                      {"candidates", candidates}};
  }
  return j;
}

std::string OodReport::markdown() const {
  std::string md = ood_markdown(rows);
  if (choice.chosen.empty()) return md;
  const auto& best = choice.candidates.front();
  std::string names;
  for (const auto& [name, what] : validation_sets) names += (names.empty() ? "" : ", ") + name + " (" + what + ")";
  md += fmt::format(
      "\n## Score chosen on validation sets\n\nIn-distribution: {}; OoD: its transformations {}. None of the "
      "reported sets took part. Criterion: highest mean AUROC over the validation sets.\n\nChosen: **{}** (mean "
      "AUROC {:.4f}, worst {:.4f}); threshold {:.6g} flags at most {:g} of the validation images.\n\n",
      validation_in, names, choice.chosen, best.mean, best.min, choice.threshold, choice.fpr);
  md += "| candidate (best 10 of " + std::to_string(choice.candidates.size()) + ") | mean | worst |";
  for (const auto& [name, what] : validation_sets) md += " " + name + " |";
  md += "\n| --- | --- | --- |";
  for (size_t i = 0; i < validation_sets.size(); ++i) md += " --- |";
  md += "\n";
  for (size_t i = 0; i < std::min<size_t>(10, choice.candidates.size()); ++i) {
    const auto& c = choice.candidates[i];
    md += fmt::format("| {} | {:.4f} | {:.4f} |", c.score, c.mean, c.min);
    for (const auto& [name, what] : validation_sets) md += fmt::format(" {:.4f} |", c.auroc.at(name));
    md += "\n";
  }
  md +=
      "\n### The chosen score on the reported sets\n\n| set | AUROC | flagged at the threshold |\n| --- | --- | --- "
      "|\n";
  md += fmt::format("| {} (in-distribution) | - | {:.4f} |\n", in, flagged.at(in));
  for (const auto& row : rows)
    if (row.score == choice.chosen)
      md += fmt::format("| {} | {:.4f} | {:.4f} |\n", row.set, row.auroc, flagged.at(row.set));
  return md;
}

void OodReport::write(const Pae& pae, const std::string& out_dir) const {
  const fs::path out(out_dir);
  ensure_dir(out / "scores");
  std::set<std::string> written;  // what this report describes; any other score file or curve is an earlier one's
  for (const auto& [set, by_score] : scores)
    for (const auto& [name, s] : by_score) {
      const auto file = out / "scores" / (file_safe(set) + "__" + file_safe(name) + ".npy");
      data::write_npy(file.string(), s.to(torch::kFloat32));
      written.insert(file.filename().string());
    }
  for (const auto& [name, s] : scores.at(in)) written.insert("roc_" + file_safe(name) + ".svg");
  for (const auto& folder : {out, out / "scores"})
    for (const auto& e : fs::directory_iterator(folder)) {
      const auto file = e.path().filename().string();
      const bool earlier =
          folder == out ? file.rfind("roc_", 0) == 0 && e.path().extension() == ".svg" : e.path().extension() == ".npy";
      if (e.is_regular_file() && earlier && !written.count(file)) {
        spdlog::info("removing {}: an earlier OoD report's, not described by this one", e.path().string());
        fs::remove(e.path());
      }
    }
  for (const auto& [name, s] : scores.at(in)) {
    std::vector<metrics::RocSeries> series;
    const auto a = to_doubles(s);
    for (const auto& set : sets) {
      const auto b = to_doubles(scores.at(set).at(name));
      char label[160];
      std::snprintf(label, sizeof(label), "%s (AUROC %.4f)", set.c_str(), metrics::roc_auc(a, b));
      series.push_back({label, metrics::roc_curve(a, b)});
    }
    atomic_write_text(out / ("roc_" + file_safe(name) + ".svg"),
                      metrics::roc_svg(series, "in: " + in + ", score: " + name));
  }
  atomic_write_text(out / "ood.md", markdown());
  atomic_write_text(out / "ood.json", to_json(pae).dump(1) + "\n");
}

// ---------------------------------------------------------------- reconstruction

ReconReport run_recon(Pae& pae, const std::string& split, int64_t limit) {
  ReconReport r;
  const auto set = load_set(pae.config().data.name + ":" + split, pae.config(), pae.image_shape(), limit);
  r.set = set.name;
  r.images = set.size();
  r.per_image_mse = pae.scores(set.images).at("recon_mse");
  const auto q = torch::quantile(r.per_image_mse, torch::tensor({0.05, 0.25, 0.5, 0.75, 0.95}, torch::kFloat64));
  const char* names[] = {"p05", "p25", "median", "p75", "p95"};
  for (int i = 0; i < 5; ++i) r.per_image[names[i]] = q[i].item<double>();
  r.per_image["max"] = r.per_image_mse.max().item<double>();
  r.mse = r.per_image_mse.mean().item<double>();
  return r;
}

json ReconReport::to_json(const Pae& pae) const {
  json j = runs_of(pae);
  j.update({{"set", set},
            {"images", images},
            {"mse_per_pixel", mse},
            {"pixel_scale", "[0, 1] (the same MSE as x/255 - 0.5)"},
            {"per_image_mse", per_image}});
  return j;
}

// ---------------------------------------------------------------- Parzen

ParzenReport run_parzen(Pae& pae, const ParzenOptions& o) {
  torch::manual_seed(0);
  ParzenReport r;
  require(o.sigma_min <= o.sigma_max, "--sigma-min " + fmt::format("{:g}", o.sigma_min) +
                                          " is larger than --sigma-max " + fmt::format("{:g}", o.sigma_max) +
                                          ": the grid runs from the smaller to the larger");
  r.generator = pae.has_flow() ? "PAE: flow -> decoder" : "decoder on N(0, I) codes";
  r.samples = o.samples;
  const auto centres = (pae.has_flow() ? pae.sample(o.samples) : pae.sample_prior(o.samples)).flatten(1);
  const auto& name = pae.config().data.name;
  const auto val = load_set(name + ":val", pae.config(), pae.image_shape(), o.val);
  const auto test = load_set(name + ":test", pae.config(), pae.image_shape(), o.limit);
  r.test_set = test.name;
  r.validation_images = val.size();
  r.test_images = test.size();
  r.result = metrics::parzen_evaluate(centres, val.images.flatten(1), test.images.flatten(1),
                                      metrics::log_grid(o.sigma_min, o.sigma_max, o.sigma_steps));
  return r;
}

json ParzenReport::to_json(const Pae& pae) const {
  json grid = json::array();
  for (const auto& [sigma, ll] : result.validation) grid.push_back({{"sigma", sigma}, {"val_log_likelihood", ll}});
  json j = runs_of(pae);
  j.update({{"generator", generator},
            {"samples", samples},
            {"validation_images", validation_images},
            {"test_images", test_images},
            {"pixel_scale", "[0, 1]"},
            {"sigma", result.sigma},
            {"test_log_likelihood", result.mean},
            {"standard_error", result.std_error},
            {"sigma_grid", grid}});
  return j;
}

// ---------------------------------------------------------------- FID

namespace {

/// The T of a set "flow:T" (several temperatures in one call); plain "flow" samples at `fallback`.
double set_temperature(const std::string& t, double fallback) {
  if (t.empty()) return fallback;
  char* end = nullptr;
  const double temperature = std::strtod(t.c_str(), &end);
  require(end && *end == '\0' && temperature > 0 && temperature <= 10,
          "--sets flow:" + t + ": expected a temperature in (0, 10], e.g. flow:0.8");
  return temperature;
}

}  // namespace

const std::map<std::string, SetGenerator>& generated_sets() {
  static const std::map<std::string, SetGenerator> registry = {
      {"recon",
       [](Pae& pae, const GenerateOptions& o, const std::string&) {
         const auto set = load_set(pae.config().data.name + ":" + o.recon_split, pae.config(), pae.image_shape(), o.n);
         return GeneratedSet{pae.reconstruct(set.images), "reconstructions of the first " + std::to_string(set.size()) +
                                                              " " + o.recon_split + " images"};
       }},
      {"data",
       [](Pae& pae, const GenerateOptions& o, const std::string&) {
         const auto set = load_set(pae.config().data.name + ":" + o.recon_split, pae.config(), pae.image_shape(), o.n);
         return GeneratedSet{set.images, "the first " + std::to_string(set.size()) + " " + o.recon_split +
                                             " images (real data: the floor)"};
       }},
      {"flow",
       [](Pae& pae, const GenerateOptions& o, const std::string& t) {
         require(pae.has_flow(), "--sets flow needs --flow FLOW_DIR");
         const double temperature = set_temperature(t, o.temperature);
         return GeneratedSet{pae.sample(o.n, temperature),
                             "PAE samples: N(0, T^2 I) -> flow -> decoder, T = " + fmt::format("{:g}", temperature)};
       }},
      {"prior",
       [](Pae& pae, const GenerateOptions& o, const std::string&) {
         return GeneratedSet{pae.sample_prior(o.n), "decoded N(0, I) codes"};
       }},
      {"npy",
       [](Pae& pae, const GenerateOptions& o, const std::string& file) {
         require(!file.empty(), "--sets npy:FILE: no file given");
         auto x = data::read_npy(file).to(torch::kFloat32);
         const auto shape = pae.image_shape();
         require(x.dim() == 4 && std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end()) == shape,
                 file + ": expected images [N," + std::to_string(shape[0]) + "," + std::to_string(shape[1]) + "," +
                     std::to_string(shape[2]) + "] in [0, 1]");
         return GeneratedSet{x.slice(0, 0, o.n), "images from " + file};
       }},
  };
  return registry;
}

GeneratedSet generate_set(const std::string& spec, Pae& pae, const GenerateOptions& options) {
  const auto colon = spec.find(':');
  const auto name = spec.substr(0, colon);
  const auto& registry = generated_sets();
  auto it = registry.find(name);
  if (it == registry.end()) {
    std::string names;
    for (const auto& [k, v] : registry)
      names += (names.empty() ? "" : ", ") + k + (k == "npy" ? ":FILE" : k == "flow" ? "[:T]" : "");
    throw Error("--sets: unknown set '" + spec + "' (expected " + names + ")");
  }
  torch::manual_seed(0);
  return it->second(pae, options, colon == std::string::npos ? "" : spec.substr(colon + 1));
}

const std::map<std::string, ExtractorFactory>& extractors() {
  static const std::map<std::string, ExtractorFactory> registry = {
      {"domain",
       [](const Pae& pae, const ExtractorOptions& o) {
         const auto& dataset = pae.config().data.name;
         const auto dir = o.classifier_dir.empty() ? "runs/classifiers/" + dataset : o.classifier_dir;
         DomainClassifierInfo info;
         auto extractor = domain_classifier(dir, &info);
         require(info.dataset == dataset, "domain classifier " + dir + " was trained on " + info.dataset +
                                              " but auto-encoder " + pae.ae_run() + " on " + dataset +
                                              ": pass --classifier DIR of a " + dataset + " classifier");
         return extractor;
       }},
      {"inception",
       [](const Pae&, const ExtractorOptions& o) {
         require(!o.inception_weights.empty(),
                 "--extractor inception needs --inception-weights FILE "
                 "(scripts/fetch_inception.sh converts pytorch-fid's weights)");
         return inception_v3(o.inception_weights,
                             o.protocol == "pae" ? InceptionProtocol::kPerImageMinMax : InceptionProtocol::kPlain);
       }},
  };
  return registry;
}

std::shared_ptr<FeatureExtractor> make_extractor(const std::string& name, const Pae& pae,
                                                 const ExtractorOptions& options) {
  auto it = extractors().find(name);
  require(it != extractors().end(), "--extractor '" + name + "': unknown (expected domain or inception)");
  return it->second(pae, options);
}

FidReport run_fid(Pae& pae, const FidOptions& o) {
  auto names = o.sets;
  if (names.empty())
    names = pae.has_flow() ? std::vector<std::string>{"recon", "flow", "prior"}
                           : std::vector<std::string>{"recon", "prior"};
  // Every name is checked, and the extractor built, before any long work.
  bool choose = false;
  for (const auto& name : names) {
    const auto registered = generated_sets().count(name.substr(0, name.find(':')));
    require(registered,
            "--sets: unknown set '" + name + "' (expected recon, flow, flow:T, flow:auto, prior, data or npy:FILE)");
    if (name.rfind("flow", 0) == 0) {
      require(pae.has_flow(), "--sets " + name + " needs --flow FLOW_DIR");
      choose = choose || name == "flow:auto";
      require(name != "flow:auto" || o.ref != "val",
              "--sets flow:auto chooses the temperature on the val split: measure against --ref test (or train), "
              "not the split the choice was made on");
      if (name.size() > 4 && name != "flow:auto") set_temperature(name.substr(5), 1.0);
    }
  }
  auto extractor = make_extractor(o.extractor, pae, o.extractor_options);
  // flow:auto chooses its temperature on the validation split: loaded now, so that a dataset
  // without one fails before the long work.
  at::Tensor val_images;
  std::string val_name;
  if (choose) {
    const auto val = load_set(pae.config().data.name + ":val", pae.config(), pae.image_shape(), o.generate.n);
    val_images = val.images;
    val_name = val.name;
  }
  FidReport r;
  r.extractor = extractor->describe();
  const auto ref = load_set(pae.config().data.name + ":" + o.ref, pae.config(), pae.image_shape(), o.generate.n);
  r.reference = ref.name;
  const auto ref_stats = metrics::gaussian_stats(extractor->features(ref.images), o.min_samples);
  r.reference_samples = ref_stats.count;
  for (const auto& name : names) {
    GeneratedSet set;
    TemperatureChoice choice;
    if (name == "flow:auto") {
      choice = choose_temperature(pae, *extractor, val_images, val_name, default_temperature_grid(), o.generate.n,
                                  o.min_samples);
      set = generate_set(fmt::format("flow:{:g}", choice.temperature), pae, o.generate);
      set.what += fmt::format(", the lowest FID against {} over T = {:g}..{:g} (samples of seed 1)", choice.reference,
                              choice.fid.front().first, choice.fid.back().first);
    } else {
      set = generate_set(name, pae, o.generate);
    }
    const auto stats = metrics::gaussian_stats(extractor->features(set.images), o.min_samples);
    r.rows.push_back({name, set.what, metrics::frechet_parts(stats, ref_stats), stats.count, choice});
    spdlog::info("FID {}: {:.3f} ({} samples; {})", name, r.rows.back().parts.total(), stats.count, set.what);
  }
  return r;
}

std::vector<double> default_temperature_grid() {
  std::vector<double> grid;
  for (int i = 5; i <= 20; ++i) grid.push_back(i / 10.0);
  return grid;
}

TemperatureChoice choose_temperature(Pae& pae, FeatureExtractor& extractor, const at::Tensor& reference,
                                     const std::string& reference_name, const std::vector<double>& grid, int64_t n,
                                     int64_t min_samples) {
  require(pae.has_flow(), "choosing a sampling temperature needs a flow");
  require(!grid.empty(), "choosing a sampling temperature: empty grid");
  TemperatureChoice c;
  c.reference = reference_name;
  const auto ref_stats = metrics::gaussian_stats(extractor.features(reference), min_samples);
  double best = std::numeric_limits<double>::infinity();
  size_t best_i = 0;
  for (size_t i = 0; i < grid.size(); ++i) {
    torch::manual_seed(1);  // not the reported sets' seed 0
    const auto stats = metrics::gaussian_stats(extractor.features(pae.sample(n, grid[i])), min_samples);
    const double fid = metrics::frechet_parts(stats, ref_stats).total();
    c.fid.emplace_back(grid[i], fid);
    spdlog::info("temperature {:g}: FID {:.3f} against {}", grid[i], fid, reference_name);
    if (fid < best) best = fid, best_i = i;
  }
  require(std::isfinite(best), "choosing a sampling temperature: no finite FID over the grid");
  c.temperature = grid[best_i];
  c.at_edge = grid.size() > 1 && (best_i == 0 || best_i + 1 == grid.size());
  if (c.at_edge)
    spdlog::warn(
        "the lowest FID against {} is at T = {:g}, an end of the grid {:g}..{:g}: the best temperature may lie beyond "
        "it",
        reference_name, c.temperature, grid.front(), grid.back());
  return c;
}

json FidReport::to_json(const Pae& pae) const {
  json results = json::object();
  for (const auto& row : rows) {
    results[row.set] = {{"fid", row.parts.total()},       {"mean_term", row.parts.mean_term},
                        {"cov_term", row.parts.cov_term}, {"spread", row.parts.spread},
                        {"samples", row.samples},         {"what", row.what}};
    if (!row.choice.fid.empty()) {
      json grid = json::array();
      for (const auto& [t, fid] : row.choice.fid) grid.push_back({{"temperature", t}, {"fid", fid}});
      results[row.set].update(
          {{"temperature", row.choice.temperature},
           {"temperature_choice",
            {{"reference", row.choice.reference}, {"seed", 1}, {"at_grid_edge", row.choice.at_edge}, {"grid", grid}}}});
    }
  }
  json j = runs_of(pae);
  j.update({{"extractor", extractor},
            {"reference", {{"set", reference}, {"samples", reference_samples}}},
            {"distance",
             "||mu1-mu2||^2 (mean_term) + Tr S1 + Tr S2 - 2 sum sqrt eig(sqrt(S1) S2 sqrt(S1)) (cov_term), "
             "float64; spread = Tr S1 / Tr S_ref"},
            {"results", results}});
  return j;
}

std::string FidReport::markdown() const {
  std::string table =
      "| set | FID | mean term | covariance term | spread (Tr S / Tr S_ref) | samples | what |\n"
      "| --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& row : rows) {
    char line[640];
    std::snprintf(line, sizeof(line), "| %s | %.3f | %.3f | %.3f | %.3f | %lld | %s |\n", row.set.c_str(),
                  row.parts.total(), row.parts.mean_term, row.parts.cov_term, row.parts.spread,
                  static_cast<long long>(row.samples), row.what.c_str());
    table += line;
  }
  return table;
}

std::string write_ood(Pae& pae, const OodOptions& options, const std::string& dir, bool force) {
  const ReportFolder folder(dir, "ood.json", force);
  const auto& path = folder.path();
  const auto report = run_ood(pae, options);
  report.write(pae, dir);
  spdlog::info(
      "OoD: {} in-distribution + {} OoD sets scored in {:.1f} s (total {:.1f} s); wrote {}, ood.md, "
      "roc_*.svg, scores/",
      report.sizes.at(report.in), report.sets.size(), report.seconds_scores, report.seconds_total, path);
  return report.markdown();
}

std::string write_recon(Pae& pae, const std::string& split, int64_t limit, const std::string& dir, bool force) {
  const ReportFolder folder(dir, "recon_" + split + ".json", force);
  const auto& path = folder.path();
  const auto r = run_recon(pae, split, limit);
  data::write_npy((fs::path(dir) / ("recon_mse_" + split + ".npy")).string(), r.per_image_mse.to(at::kFloat));
  atomic_write_text(path, r.to_json(pae).dump(1) + "\n");
  spdlog::info("wrote {}", path);
  return fmt::format("reconstruction MSE per pixel on {} ({} images): {:.6f} (median image {:.6f}, p95 {:.6f})\n",
                     r.set, r.images, r.mse, r.per_image.at("median"), r.per_image.at("p95"));
}

std::string write_fid(Pae& pae, const FidOptions& options, const std::string& dir, bool force) {
  const ReportFolder folder(dir, "fid_" + options.extractor + ".json", force);
  const auto& path = folder.path();
  const auto r = run_fid(pae, options);
  atomic_write_text(path, r.to_json(pae).dump(1) + "\n");
  atomic_write_text(fs::path(dir) / ("fid_" + options.extractor + ".md"), r.markdown());
  spdlog::info("wrote {}", path);
  return fmt::format("FID ({}) against {} ({} images):\n{}", r.extractor, r.reference, r.reference_samples,
                     r.markdown());
}

std::string write_parzen(Pae& pae, const ParzenOptions& options, const std::string& dir, bool force) {
  const ReportFolder folder(dir, "parzen.json", force);
  const auto& path = folder.path();
  const auto r = run_parzen(pae, options);
  atomic_write_text(path, r.to_json(pae).dump(1) + "\n");
  spdlog::info("wrote {}", path);
  return fmt::format(
      "Parzen log-likelihood on {}: {:.2f} +- {:.2f} (sigma {:.4g} chosen on {} validation images, {} samples)\n",
      r.test_set, r.result.mean, r.result.std_error, r.result.sigma, r.validation_images, r.samples);
}

}  // namespace pae::eval
