// pae-eval: measurements of a trained PAE, each protocol choice named in its JSON report.
//   pae-eval ood     OoD detection: per-sample scores, AUROC / AP / FPR@95%TPR, ROC curves
//   pae-eval recon   reconstruction MSE per pixel on a split (mean and per-image distribution)
//   pae-eval parzen  Parzen-window log-likelihood of generated samples (the AAE protocol)
//   pae-eval fid     Fréchet distance of reconstructions / PAE samples / N(0, I) decodes / an
//                    .npy of images to a reference split (domain classifier or Inception features)
// (Sampling and interpolation live in pae-flow: one place, not two.)
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <functional>
#include <sstream>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/eval/evaluate.h"
#include "pae/flows/latent_flow.h"
#include "pae/train/flow_run.h"
#include "pae/metrics/features.h"
#include "pae/metrics/fid.h"
#include "pae/metrics/ood.h"
#include "pae/metrics/parzen.h"
#include "pae/models/autoencoder.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"
#include "pae/util/runtime.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string file_safe(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
  return s;
}

/// Output directory for a report: refuses to replace an existing report unless --force.
pae::fs::path prepare_out(const std::string& out, const std::string& report, bool force) {
  pae::ensure_dir(out);
  const auto path = pae::fs::path(out) / report;
  pae::require(force || !pae::fs::exists(path),
               path.string() + " exists: pass --force to replace it, or -o another directory");
  return path;
}

struct Loaded {
  pae::Config config;
  std::shared_ptr<pae::models::AutoEncoder> ae;
  std::shared_ptr<pae::flows::LatentFlow> flow;
  std::vector<int64_t> shape;
};

Loaded load(const std::string& ae_run, const std::string& flow_dir) {
  Loaded l;
  l.ae = pae::train::load_autoencoder(ae_run, &l.config);
  const auto& s = l.ae->image_shape();
  l.shape = {s.channels, s.height, s.width};
  if (!flow_dir.empty()) {
    l.flow = pae::train::load_latent_flow(flow_dir);
    pae::eval::check_flow_matches(flow_dir, ae_run, l.flow->dim(), l.ae->latent_dim());
    l.flow->eval();
  }
  return l;
}

int run_ood(const std::string& ae_run, const std::string& flow_dir, const std::string& in_spec,
            const std::string& ood_specs, const std::string& score_list, int64_t limit, std::string out, bool force) {
  const double t0 = now();
  auto m = load(ae_run, flow_dir);
  if (out.empty()) out = (pae::fs::path(flow_dir.empty() ? ae_run : flow_dir) / "ood").string();
  const auto report = prepare_out(out, "ood.json", force);
  const auto wanted = split_list(score_list);
  auto select = [&](std::map<std::string, at::Tensor> all, const std::string& set) {
    if (wanted.empty()) return all;
    std::map<std::string, at::Tensor> keep;
    for (const auto& w : wanted) {
      auto it = all.find(w);
      std::string names;
      for (auto& [k, v] : all) names += (names.empty() ? "" : ", ") + k;
      pae::require(it != all.end(), "--scores: no score '" + w + "' for " + set + " (available: " + names + ")");
      keep[w] = it->second;
    }
    return keep;
  };
  // Every set is loaded (and checked) before any scoring starts.
  auto in = pae::eval::load_set(in_spec, m.config, m.shape, limit);
  std::map<std::string, int64_t> sizes{{in_spec, in.size()}};
  std::vector<pae::data::Dataset> sets;
  for (const auto& spec : split_list(ood_specs)) {
    sets.push_back(pae::eval::load_set(spec, m.config, m.shape, limit));
    sizes[spec] = sets.back().size();
  }
  pae::require(!sets.empty(), "--ood: no OoD set given (e.g. --ood mnist:test,noise)");
  if (!wanted.empty()) select(pae::eval::compute_scores(*m.ae, m.flow.get(), in.images.slice(0, 0, 2)), in_spec);
  const double t_load = now();
  auto in_scores = select(pae::eval::compute_scores(*m.ae, m.flow.get(), in.images), in_spec);
  std::map<std::string, std::map<std::string, at::Tensor>> out_scores;
  for (const auto& set : sets)
    out_scores[set.name] = select(pae::eval::compute_scores(*m.ae, m.flow.get(), set.images), set.name);
  const double t_scores = now();
  const auto rows = pae::eval::ood_table(in_scores, out_scores);

  pae::ensure_dir(pae::fs::path(out) / "scores");
  auto save_scores = [&](const std::string& set, const std::map<std::string, at::Tensor>& scores) {
    for (const auto& [name, s] : scores)
      pae::data::write_npy((pae::fs::path(out) / "scores" / (file_safe(set) + "__" + name + ".npy")).string(),
                           s.to(torch::kFloat32));
  };
  save_scores(in_spec, in_scores);
  for (const auto& [set, scores] : out_scores) save_scores(set, scores);
  for (const auto& [name, s] : in_scores) {
    std::vector<pae::metrics::RocSeries> series;
    const auto a = s.contiguous();
    const std::vector<double> av(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
    for (const auto& [set, scores] : out_scores) {
      const auto b = scores.at(name).contiguous();
      const std::vector<double> bv(b.data_ptr<double>(), b.data_ptr<double>() + b.numel());
      char label[160];
      std::snprintf(label, sizeof(label), "%s (AUROC %.4f)", set.c_str(), pae::metrics::roc_auc(av, bv));
      series.push_back({label, pae::metrics::roc_curve(av, bv)});
    }
    pae::atomic_write_text(pae::fs::path(out) / ("roc_" + name + ".svg"),
                           pae::metrics::roc_svg(series, "in: " + in_spec + ", score: " + name));
  }
  const std::string table = pae::eval::ood_markdown(rows);
  pae::atomic_write_text(pae::fs::path(out) / "ood.md", table);

  pae::JsonObject protocol, sizes_json, results;
  protocol.add("ae_run", ae_run)
      .add("flow", flow_dir)
      .add("in", in_spec)
      .add("positive_class", "OoD (higher score = more anomalous)")
      .add("auroc", "Mann-Whitney U / (n_in n_out), ties count one half")
      .add("average_precision", "sum over distinct thresholds of recall step x precision")
      .add("fpr_at_tpr", 0.95)
      .add("limit_per_set", limit);
  for (const auto& [k, v] : sizes) sizes_json.add(k, v);
  std::string rows_json = "[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    rows_json += (i ? ", " : "") + pae::JsonObject()
                                       .add("set", r.set)
                                       .add("score", r.score)
                                       .add("auroc", r.auroc)
                                       .add("average_precision", r.average_precision)
                                       .add("fpr_at_95_tpr", r.fpr_at_95_tpr)
                                       .add("n_in", r.n_in)
                                       .add("n_out", r.n_out)
                                       .str();
  }
  rows_json += "]";
  const double t_end = now();
  std::string json =
      pae::JsonObject()
          .add("protocol", protocol)
          .add("sizes", sizes_json)
          .add("seconds",
               pae::JsonObject().add("load", t_load - t0).add("scores", t_scores - t_load).add("total", t_end - t0))
          .str();
  json.pop_back();
  json += ", \"results\": " + rows_json + "}\n";
  pae::atomic_write_text(report, json);
  std::printf("%s", table.c_str());
  spdlog::info(
      "OoD: {} in-distribution + {} OoD sets scored in {:.1f} s (total {:.1f} s); wrote {}, ood.md, roc_*.svg, scores/",
      in.size(), out_scores.size(), t_scores - t_load, t_end - t0, report.string());
  return 0;
}

int run_recon(const std::string& ae_run, const std::string& split, int64_t limit, std::string out, bool force) {
  auto m = load(ae_run, "");
  if (out.empty()) out = ae_run;
  const auto report = prepare_out(out, "recon_" + split + ".json", force);
  auto set = pae::eval::load_set(m.config.data.name + ":" + split, m.config, m.shape, limit);
  const auto mse = pae::eval::compute_scores(*m.ae, nullptr, set.images).at("recon_mse");
  const auto q = torch::quantile(mse, torch::tensor({0.05, 0.25, 0.5, 0.75, 0.95}, torch::kFloat64));
  pae::JsonObject per_image;
  const char* names[] = {"p05", "p25", "median", "p75", "p95"};
  for (int i = 0; i < 5; ++i) per_image.add(names[i], q[i].item<double>());
  per_image.add("max", mse.max().item<double>());
  const double mean = mse.mean().item<double>();
  pae::atomic_write_text(report, pae::JsonObject()
                                         .add("ae_run", ae_run)
                                         .add("set", set.name)
                                         .add("images", set.size())
                                         .add("mse_per_pixel", mean)
                                         .add("pixel_scale", "[0, 1] (the same MSE as x/255 - 0.5)")
                                         .add("per_image_mse", per_image)
                                         .str() +
                                     "\n");
  pae::data::write_npy((pae::fs::path(out) / ("recon_mse_" + split + ".npy")).string(), mse.to(torch::kFloat32));
  std::printf("reconstruction MSE per pixel on %s (%lld images): %.6f (median image %.6f, p95 %.6f)\n",
              set.name.c_str(), static_cast<long long>(set.size()), mean, q[2].item<double>(), q[4].item<double>());
  spdlog::info("wrote {}", report.string());
  return 0;
}

int run_parzen(const std::string& ae_run, const std::string& flow_dir, int64_t n_samples, int64_t n_val, int64_t limit,
               double lo, double hi, int64_t steps, std::string out, bool force) {
  auto m = load(ae_run, flow_dir);
  if (out.empty()) out = flow_dir.empty() ? ae_run : flow_dir;
  const auto report = prepare_out(out, "parzen.json", force);
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  // Generated samples: the PAE's (flow -> decoder), or decoded N(0, I) codes without a flow.
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < n_samples; i += 1000) {
    const int64_t b = std::min<int64_t>(1000, n_samples - i);
    parts.push_back(m.flow ? m.ae->decode(m.flow->sample(b).to(torch::kFloat32)) : m.ae->sample_prior(b));
  }
  const auto centres = torch::cat(parts).flatten(1);
  auto val = pae::eval::load_set(m.config.data.name + ":val", m.config, m.shape, n_val);
  auto test = pae::eval::load_set(m.config.data.name + ":test", m.config, m.shape, limit);
  const auto r = pae::metrics::parzen_evaluate(centres, val.images.flatten(1), test.images.flatten(1),
                                               pae::metrics::log_grid(lo, hi, steps));
  std::string grid = "[";
  for (size_t i = 0; i < r.validation.size(); ++i)
    grid +=
        (i ? ", " : "") +
        pae::JsonObject().add("sigma", r.validation[i].first).add("val_log_likelihood", r.validation[i].second).str();
  grid += "]";
  std::string json = pae::JsonObject()
                         .add("ae_run", ae_run)
                         .add("flow", flow_dir)
                         .add("generator", m.flow ? "PAE: flow -> decoder" : "decoder on N(0, I) codes")
                         .add("samples", n_samples)
                         .add("validation_images", val.size())
                         .add("test_images", test.size())
                         .add("pixel_scale", "[0, 1]")
                         .add("sigma", r.sigma)
                         .add("test_log_likelihood", r.mean)
                         .add("standard_error", r.std_error)
                         .str();
  json.pop_back();
  json += ", \"sigma_grid\": " + grid + "}\n";
  pae::atomic_write_text(report, json);
  std::printf("Parzen log-likelihood on %s: %.2f +- %.2f (sigma %.4g chosen on %lld validation images, %lld samples)\n",
              test.name.c_str(), r.mean, r.std_error, r.sigma, static_cast<long long>(val.size()),
              static_cast<long long>(n_samples));
  spdlog::info("wrote {}", report.string());
  return 0;
}

struct FidOptions {
  std::string sets, ref = "test", extractor = "domain", classifier_dir, inception_weights, protocol = "pae";
  std::string recon_split = "train";
  int64_t n = 10000, min_samples = 1000;
  double temperature = 1.0;
};

/// The images of one generated set: recon | flow | prior | data | npy:FILE.
at::Tensor generated_set(const std::string& what, Loaded& m, const FidOptions& f, int64_t n, std::string* note) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  auto batched = [&](const std::function<at::Tensor(int64_t)>& make) {
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < n; i += 1000) parts.push_back(make(std::min<int64_t>(1000, n - i)));
    return torch::cat(parts);
  };
  if (what == "recon" || what == "data") {
    auto set = pae::eval::load_set(m.config.data.name + ":" + f.recon_split, m.config, m.shape, n);
    *note = (what == "recon" ? "reconstructions of the first " : "the first ") + std::to_string(set.size()) + " " +
            f.recon_split + " images" + (what == "data" ? " (real data: the floor)" : "");
    if (what == "data") return set.images;
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < set.size(); i += 1000) parts.push_back(m.ae->reconstruct(set.images.slice(0, i, i + 1000)));
    return torch::cat(parts);
  }
  if (what == "flow") {
    pae::require(m.flow != nullptr, "--sets flow needs --flow FLOW_DIR");
    *note = "PAE samples: N(0, T^2 I) -> flow -> decoder, T = " + std::to_string(f.temperature);
    return batched([&](int64_t b) { return m.ae->decode(m.flow->sample(b, f.temperature).to(torch::kFloat32)); });
  }
  if (what == "prior") {
    *note = "decoded N(0, I) codes";
    return batched([&](int64_t b) { return m.ae->sample_prior(b); });
  }
  if (what.rfind("npy:", 0) == 0) {
    auto x = pae::data::read_npy(what.substr(4)).to(torch::kFloat32);
    pae::require(x.dim() == 4 && std::vector<int64_t>(x.sizes().begin() + 1, x.sizes().end()) == m.shape,
                 what.substr(4) + ": expected images [N," + std::to_string(m.shape[0]) + "," +
                     std::to_string(m.shape[1]) + "," + std::to_string(m.shape[2]) + "] in [0, 1]");
    *note = "images from " + what.substr(4);
    return x.slice(0, 0, n);
  }
  throw pae::Error("--sets: unknown set '" + what + "' (expected recon, flow, prior, data or npy:FILE)");
}

int run_fid(const std::string& ae_run, const std::string& flow_dir, FidOptions f, std::string out, bool force) {
  auto m = load(ae_run, flow_dir);
  if (out.empty()) out = flow_dir.empty() ? ae_run : flow_dir;
  const auto report = prepare_out(out, "fid_" + f.extractor + ".json", force);
  if (f.sets.empty()) f.sets = flow_dir.empty() ? "recon,prior" : "recon,flow,prior";
  const auto names = split_list(f.sets);
  pae::require(!names.empty(), "--sets: no set given");
  for (const auto& name : names)
    pae::require(name == "recon" || name == "flow" || name == "prior" || name == "data" || name.rfind("npy:", 0) == 0,
                 "--sets: unknown set '" + name + "' (expected recon, flow, prior, data or npy:FILE)");
  pae::require(m.flow || std::find(names.begin(), names.end(), "flow") == names.end(), "--sets flow needs --flow FLOW_DIR");
  // The extractor first: a missing weights file fails before any work.
  std::shared_ptr<pae::metrics::FeatureExtractor> extractor;
  if (f.extractor == "domain") {
    if (f.classifier_dir.empty()) f.classifier_dir = "runs/classifiers/" + m.config.data.name;
    pae::metrics::DomainClassifierInfo info;
    extractor = pae::metrics::domain_classifier(f.classifier_dir, &info);
    pae::require(info.dataset == m.config.data.name, "domain classifier " + f.classifier_dir + " was trained on " +
                                                         info.dataset + " but auto-encoder " + ae_run + " on " +
                                                         m.config.data.name + ": pass --classifier DIR of a " +
                                                         m.config.data.name + " classifier");
  } else {
    pae::require(!f.inception_weights.empty(),
                 "--extractor inception needs --inception-weights FILE "
                 "(scripts/fetch_inception.sh converts pytorch-fid's weights)");
    extractor = pae::metrics::inception_v3(f.inception_weights, f.protocol == "pae"
                                                                    ? pae::metrics::InceptionProtocol::kPerImageMinMax
                                                                    : pae::metrics::InceptionProtocol::kPlain);
  }
  auto ref = pae::eval::load_set(m.config.data.name + ":" + f.ref, m.config, m.shape, f.n);
  const auto ref_stats = pae::metrics::gaussian_stats(extractor->features(ref.images), f.min_samples);
  pae::JsonObject results;
  std::string table =
      "| set | FID | mean term | covariance term | spread (Tr S / Tr S_ref) | samples | what |\n"
      "| --- | --- | --- | --- | --- | --- | --- |\n";
  for (const auto& name : names) {
    std::string note;
    auto images = generated_set(name, m, f, f.n, &note);
    const auto stats = pae::metrics::gaussian_stats(extractor->features(images), f.min_samples);
    const auto parts = pae::metrics::frechet_parts(stats, ref_stats);
    const double d = parts.total();
    results.add(name, pae::JsonObject()
                          .add("fid", d)
                          .add("mean_term", parts.mean_term)
                          .add("cov_term", parts.cov_term)
                          .add("spread", parts.spread)
                          .add("samples", stats.count)
                          .add("what", note));
    char row[640];
    std::snprintf(row, sizeof(row), "| %s | %.3f | %.3f | %.3f | %.3f | %lld | %s |\n", name.c_str(), d, parts.mean_term,
                  parts.cov_term, parts.spread, static_cast<long long>(stats.count), note.c_str());
    table += row;
    spdlog::info("FID {}: {:.3f} ({} samples; {})", name, d, stats.count, note);
  }
  pae::atomic_write_text(
      report, pae::JsonObject()
                      .add("ae_run", ae_run)
                      .add("flow", flow_dir)
                      .add("extractor", extractor->describe())
                      .add("reference", pae::JsonObject().add("set", ref.name).add("samples", ref_stats.count))
                      .add("distance",
                           "||mu1-mu2||^2 (mean_term) + Tr S1 + Tr S2 - 2 sum sqrt eig(sqrt(S1) S2 sqrt(S1)) (cov_term), "
                           "float64; spread = Tr S1 / Tr S_ref")
                      .add("results", results)
                      .str() +
                  "\n");
  pae::atomic_write_text(pae::fs::path(out) / ("fid_" + f.extractor + ".md"), table);
  std::printf("FID (%s) against %s (%lld images):\n%s", extractor->describe().c_str(), ref.name.c_str(),
              static_cast<long long>(ref_stats.count), table.c_str());
  spdlog::info("wrote {}", report.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  pae::ensure_fast_blas_kernels(argc, argv);
  CLI::App app{"pae-eval: OoD detection, reconstruction error and Parzen likelihood of a trained PAE"};
  app.require_subcommand(1);
  std::string ae_run, flow_dir, out;
  bool force = false;
  int64_t limit = 0;
  auto common = [&](CLI::App* sub, bool with_flow) {
    sub->add_option("--ae-run", ae_run, "auto-encoder run directory")->required();
    if (with_flow) sub->add_option("--flow", flow_dir, "flow run directory (pae-flow)");
    sub->add_option("-o,--out", out, "output directory");
    sub->add_flag("--force", force, "replace an existing report");
    sub->add_option("--limit", limit, "first N images of each set (0 = all)")->check(CLI::NonNegativeNumber);
  };
  std::string in_spec = "fashion-mnist:test", ood_specs = "mnist:test,noise,constant,constant-gray", scores;
  auto* ood = app.add_subcommand("ood", "OoD detection: AUROC, AP and FPR@95%TPR of every score on every OoD set");
  common(ood, true);
  ood->add_option("--in", in_spec, "in-distribution set name[:split]");
  ood->add_option("--ood", ood_specs, "comma-separated OoD sets name[:split]");
  ood->add_option("--scores", scores, "comma-separated scores (default: all the model and flow define)");

  std::string split = "test";
  auto* recon = app.add_subcommand("recon", "reconstruction MSE per pixel on a split");
  common(recon, false);
  recon->add_option("--split", split, "train | val | test")->check(CLI::IsMember({"train", "val", "test"}));

  int64_t n_samples = 10000, n_val = 1000, steps = 20;
  double lo = 0.05, hi = 1.0;
  auto* parzen = app.add_subcommand("parzen", "Parzen-window log-likelihood of generated samples (AAE protocol)");
  common(parzen, true);
  parzen->add_option("--samples", n_samples, "generated samples (kernel centres)")->check(CLI::PositiveNumber);
  parzen->add_option("--val", n_val, "validation images for choosing sigma")->check(CLI::PositiveNumber);
  parzen->add_option("--sigma-min", lo, "smallest sigma of the log grid")->check(CLI::PositiveNumber);
  parzen->add_option("--sigma-max", hi, "largest sigma of the log grid")->check(CLI::PositiveNumber);
  parzen->add_option("--sigma-steps", steps, "grid size")->check(CLI::PositiveNumber);
  FidOptions fo;
  auto* fid = app.add_subcommand("fid", "Fréchet distance of generated sets to a reference split");
  common(fid, true);
  fid->add_option("--sets", fo.sets, "comma-separated: recon, flow, prior, data, npy:FILE (default recon,flow,prior)");
  fid->add_option("--ref", fo.ref, "reference split of the AE's dataset")
      ->check(CLI::IsMember({"train", "val", "test"}));
  fid->add_option("--recon-split", fo.recon_split, "split reconstructed for 'recon' (and used for 'data')")
      ->check(CLI::IsMember({"train", "val", "test"}));
  fid->add_option("--n", fo.n, "samples per set (and reference images)")->check(CLI::PositiveNumber);
  fid->add_option("--min-samples", fo.min_samples, "refuse sets smaller than this")->check(CLI::PositiveNumber);
  fid->add_option("--temperature", fo.temperature, "temperature of PAE samples")->check(CLI::Range(0.0, 10.0));
  fid->add_option("--extractor", fo.extractor, "domain | inception")->check(CLI::IsMember({"domain", "inception"}));
  fid->add_option("--classifier", fo.classifier_dir,
                  "domain classifier run of pae-train (default runs/classifiers/<dataset>)");
  fid->add_option("--inception-weights", fo.inception_weights, "converted pytorch-fid weights (.pth dict)");
  fid->add_option("--protocol", fo.protocol, "inception preprocessing: pae (per-image min-max) | plain")
      ->check(CLI::IsMember({"pae", "plain"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : pae::kUserErrorExit;
  }
  return pae::run_guarded([&]() -> int {
    pae::warn_if_slow_blas();
    pae::configure_threads({});
    if (*ood) return run_ood(ae_run, flow_dir, in_spec, ood_specs, scores, limit, out, force);
    if (*recon) return run_recon(ae_run, split, limit, out, force);
    if (*fid) return run_fid(ae_run, flow_dir, fo, out, force);
    return run_parzen(ae_run, flow_dir, n_samples, n_val, limit, lo, hi, steps, out, force);
  });
}
