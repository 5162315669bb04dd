#include "pae/report/html.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "pae/data/npy.h"
#include "pae/report/svg.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/run_state.h"
#include "pae/util/text.h"

namespace pae::report {

namespace {

using nlohmann::json;

std::string base64(const std::string& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(bytes[i])) << 16 | uint32_t(uint8_t(bytes[i + 1])) << 8 | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += k[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? k[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string esc(const std::string& s) { return xml_escape(s); }

std::string figure(const fs::path& png, const std::string& caption) {
  return "<figure><img alt=\"" + esc(caption) + "\" src=\"data:image/png;base64," + base64(read_text(png)) +
         "\"><figcaption>" + esc(caption) + "</figcaption></figure>\n";
}

json read_json(const fs::path& path) {
  try {
    return json::parse(read_text(path));
  } catch (const json::exception& e) {
    throw Error(path.string() + ": not valid JSON (" + e.what() + ")");
  }
}

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6g", v.get<double>());
    return b;
  }
  return v.dump();
}

/// Any JSON as HTML: objects as key/value tables, arrays of objects as tables with a column per
/// key, other arrays inline.
std::string json_html(const json& v) {
  if (v.is_object()) {
    std::string s = "<table class=\"kv\">";
    for (const auto& [k, x] : v.items()) s += "<tr><th>" + esc(k) + "</th><td>" + json_html(x) + "</td></tr>";
    return s + "</table>";
  }
  if (v.is_array() && !v.empty() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_object(); })) {
    std::vector<std::string> keys;
    for (const auto& row : v)
      for (const auto& [k, x] : row.items())
        if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
    // Names (set, score, ...) first, then the numbers.
    std::stable_partition(keys.begin(), keys.end(),
                          [&](const std::string& k) { return v.front().contains(k) && v.front().at(k).is_string(); });
    std::string s = "<table class=\"rows\"><tr>";
    for (const auto& k : keys) s += "<th>" + esc(k) + "</th>";
    s += "</tr>";
    for (const auto& row : v) {
      s += "<tr>";
      for (const auto& k : keys) s += "<td>" + (row.contains(k) ? json_html(row.at(k)) : "") + "</td>";
      s += "</tr>";
    }
    return s + "</table>";
  }
  if (v.is_array()) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + json_html(x);
    return "[" + s + "]";
  }
  return esc(scalar_text(v));
}

/// metrics.jsonl as columns (epoch-indexed), with where each phase starts.
struct Curves {
  std::vector<double> epochs;
  std::map<std::string, std::vector<double>> columns;  // NaN where a line lacks the key
  std::vector<std::pair<double, std::string>> phases;
};

Curves read_curves(const fs::path& path) {
  Curves c;
  std::istringstream in(read_text(path));
  std::string line, phase;
  size_t row = 0;
  for (; std::getline(in, line); ++row) {
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      throw Error(path.string() + ":" + std::to_string(row + 1) + ": not a JSON object");
    }
    const double epoch = j.value("epoch", double(row + 1));
    c.epochs.push_back(epoch);
    const std::string p = j.value("phase", std::string());
    if (!p.empty() && p != phase) c.phases.emplace_back(epoch - 0.5, p);
    phase = p;
    for (const auto& [k, v] : j.items()) {
      if (k == "epoch" || !(v.is_number() || v.is_null())) continue;
      auto& col = c.columns[k];
      col.resize(row, std::nan(""));
      col.push_back(v.is_number() ? v.get<double>() : std::nan(""));
    }
    for (auto& [k, col] : c.columns) col.resize(row + 1, std::nan(""));
  }
  return c;
}

bool wide_positive(const std::vector<Series>& series) {
  double lo = INFINITY, hi = 0;
  for (const auto& s : series)
    for (const double y : s.y)
      if (std::isfinite(y)) {
        if (y <= 0) return false;
        lo = std::min(lo, y);
        hi = std::max(hi, y);
      }
  return hi > 0 && hi / lo > 50;
}

/// A plot per loss term (train and validation together), the learning rates, the throughput.
std::string curves_html(const Curves& c, const std::string& run_label) {
  std::map<std::string, std::vector<Series>> by_term;
  std::vector<Series> lrs, rates, other;
  for (const auto& [k, col] : c.columns) {
    Series s{k, c.epochs, col};
    if (k.rfind("train_", 0) == 0) {
      s.name = "train";
      by_term[k.substr(6)].push_back(s);
    } else if (k.rfind("val_", 0) == 0) {
      s.name = "validation";
      by_term[k.substr(4)].push_back(s);
    } else if (k == "lr" || k.rfind("lr_", 0) == 0) {
      lrs.push_back(s);
    } else if (k.size() > 6 && k.compare(k.size() - 6, 6, "_per_s") == 0) {
      rates.push_back(s);
    } else if (k != "seconds" && k != "step") {
      other.push_back(s);
    }
  }
  std::string out;
  const auto plot = [&](const std::vector<Series>& s, const std::string& title, const std::string& y) {
    PlotOptions o;
    o.title = title;
    o.x_label = "epoch";
    o.y_label = y;
    o.log_y = wide_positive(s);
    o.markers = c.phases;
    out += "<div class=\"plot\">" + line_plot(s, o) + "</div>\n";
  };
  for (const auto& [term, s] : by_term) plot(s, run_label + ": " + term, term);
  if (!lrs.empty()) plot(lrs, run_label + ": learning rate", "lr");
  if (!rates.empty()) plot(rates, run_label + ": throughput", "per second");
  for (const auto& s : other) plot({s}, run_label + ": " + s.name, s.name);
  return out;
}

std::string section(const std::string& cls, const std::string& title, const std::string& body) {
  return "<section class=\"" + cls + "\"><h3>" + esc(title) + "</h3>\n" + body + "</section>\n";
}

/// The PNGs directly in `dir` (sorted), as figures.
std::string pngs_in(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".png") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::string out;
  for (const auto& f : files) out += figure(f, f.filename().string());
  return out;
}

/// Histograms (densities over shared bins) of one score for the in-distribution set and each
/// OoD set, from the report's scores/<set>__<score>.npy.
std::string score_histograms(const fs::path& scores_dir, const std::string& in_set) {
  std::map<std::string, std::map<std::string, fs::path>> by_score;  // score -> set -> file
  for (const auto& e : fs::directory_iterator(scores_dir)) {
    const std::string name = e.path().stem().string();
    const auto sep = name.find("__");
    if (e.path().extension() != ".npy" || sep == std::string::npos) continue;
    by_score[name.substr(sep + 2)][name.substr(0, sep)] = e.path();
  }
  std::string out;
  for (const auto& [score, sets] : by_score) {
    std::map<std::string, at::Tensor> values;
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& [set, file] : sets) {
      auto v = data::read_npy(file.string()).to(torch::kDouble).flatten();
      v = v.index_select(0, torch::isfinite(v).nonzero().flatten());
      if (v.numel() == 0) continue;
      values[set] = v;
      lo = std::min(lo, v.min().item<double>());
      hi = std::max(hi, v.max().item<double>());
    }
    if (values.empty()) continue;
    if (!(hi > lo)) hi = lo + 1;
    const int bins = 40;
    std::vector<Series> series;
    for (const auto& [set, v] : values) {
      const auto counts = torch::histc(v, bins, lo, hi);
      Series s{set == file_safe(in_set) ? set + " (in)" : set, {}, {}, true};
      const double width = (hi - lo) / bins;
      for (int b = 0; b < bins; ++b) {
        s.x.push_back(lo + width * b);
        s.y.push_back(counts[b].item<double>() / double(v.numel()) / width);
      }
      s.x.push_back(hi);
      s.y.push_back(s.y.back());
      series.push_back(s);
    }
    PlotOptions o;
    o.title = "score histogram: " + score;
    o.x_label = score;
    o.y_label = "density";
    out += "<div class=\"plot\">" + line_plot(series, o) + "</div>\n";
  }
  return out;
}

/// Every evaluation report under `root` (depth 4), each with its tables and pictures.
std::string evaluations_html(const fs::path& root) {
  std::vector<fs::path> found;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    if (it.depth() > 4) it.disable_recursion_pending();
    if (!it->is_regular_file()) continue;
    const std::string n = it->path().filename().string();
    const bool report = n == "ood.json" || n == "parzen.json" || n == "restore.json" ||
                        ((n.rfind("recon_", 0) == 0 || n.rfind("fid_", 0) == 0) && it->path().extension() == ".json");
    if (report) found.push_back(it->path());
  }
  std::sort(found.begin(), found.end());
  std::string out;
  for (const auto& f : found) {
    const json j = read_json(f);
    const std::string rel = fs::relative(f, root).string(), n = f.filename().string();
    std::string body;
    std::string kind = n == "ood.json"           ? "OoD detection"
                       : n == "parzen.json"      ? "Parzen likelihood"
                       : n == "restore.json"     ? "restoration (" + j.value("corruption", std::string("?")) + ")"
                       : n.rfind("fid_", 0) == 0 ? "FID"
                                                 : "reconstruction error";
    if (n == "ood.json" && j.contains("results")) {
      body += "<h4>Results</h4>" + json_html(j.at("results"));
      body += "<h4>ROC curves</h4>";
      std::vector<fs::path> svgs;
      for (const auto& e : fs::directory_iterator(f.parent_path()))
        if (e.path().extension() == ".svg" && e.path().filename().string().rfind("roc_", 0) == 0)
          svgs.push_back(e.path());
      std::sort(svgs.begin(), svgs.end());
      for (const auto& s : svgs) body += "<div class=\"plot\">" + read_text(s) + "</div>\n";
      if (fs::is_directory(f.parent_path() / "scores")) {
        const std::string in = j.contains("protocol") ? j.at("protocol").value("in", std::string()) : "";
        body += "<h4>Score histograms</h4>" + score_histograms(f.parent_path() / "scores", in);
      }
      if (j.contains("protocol")) body += "<h4>Protocol</h4>" + json_html(j.at("protocol"));
    } else {
      body += json_html(j);
      if (fs::exists(f.parent_path() / "panels.png"))
        body = figure(f.parent_path() / "panels.png", "panels: " + fs::relative(f.parent_path(), root).string()) + body;
    }
    out += section("evaluation", kind + ": " + rel, body);
  }
  return out.empty() ? "<p>No evaluation reports found (pae-eval ood / recon / fid / parzen / inpaint / denoise "
                       "write them into the run).</p>\n"
                     : out;
}

/// How the run's training ended (RUN/state.json): a line, and a warning box (and log line, or
/// with `strict` an error) when it did not finish.
std::string state_html(const fs::path& run, bool strict) {
  const auto state = read_run_state(run.string());
  if (state.finished())
    return "<p>Training: " + esc(state.recorded() ? state.describe() : "state not recorded (an older run)") + ".</p>\n";
  check_run_finished(run.string(), "latest", -1, strict);
  return "<p class=\"warning\"><b>This run did not finish</b>: " + esc(state.describe()) +
         ". Its checkpoints, pictures and evaluations are those of an unfinished run.</p>\n";
}

std::string run_html(const fs::path& run, const std::string& extra_flow, size_t index, bool strict) {
  require(fs::is_directory(run), "report: run directory not found: " + run.string());
  const bool is_run = fs::exists(run / "metrics.jsonl") || fs::exists(run / "config.yml");
  require(is_run, "report: " + run.string() + " is not a run directory (no config.yml or metrics.jsonl)");
  std::string body = state_html(run, strict);
  std::string summary;
  for (const char* name : {"model.json", "summary.json", "classifier.json", "latents.json"})
    if (fs::exists(run / name)) summary += "<h4>" + std::string(name) + "</h4>" + json_html(read_json(run / name));
  if (!summary.empty()) body += section("summary", "Summary", summary);
  if (fs::exists(run / "config.yml"))
    body += section("config", "Resolved config (config.yml)", "<pre>" + esc(read_text(run / "config.yml")) + "</pre>");
  const std::string label = run.filename().string();
  if (fs::exists(run / "metrics.jsonl"))
    body += section("curves", "Training curves", curves_html(read_curves(run / "metrics.jsonl"), label));
  std::string pictures;
  const std::vector<std::pair<std::string, std::string>> run_pictures = {
      {"recon.png", "test images (odd rows) and reconstructions"},
      {"samples.png", "decoded prior samples"},
      {"density.png", "log-density on a grid over the test points (density_grid.npy/.json; 12 nats of range)"}};
  for (const auto& [png, caption] : run_pictures)
    if (fs::exists(run / png)) pictures += figure(run / png, caption);
  if (fs::is_directory(run / "negatives")) pictures += pngs_in(run / "negatives");
  if (!pictures.empty()) body += section("images", "Reconstructions and samples", pictures);
  // Flows: sub-directories that are flow runs (latents.json), and the one named.
  std::vector<fs::path> flows;
  for (const auto& e : fs::directory_iterator(run))
    if (e.is_directory() && fs::exists(e.path() / "latents.json")) flows.push_back(e.path());
  if (!extra_flow.empty()) {
    require(fs::is_directory(extra_flow), "report: --flow: flow run not found: " + extra_flow);
    if (std::find(flows.begin(), flows.end(), fs::path(extra_flow)) == flows.end()) flows.push_back(extra_flow);
  }
  std::sort(flows.begin(), flows.end());
  for (const auto& f : flows) {
    std::string fb = state_html(f, strict);
    for (const char* name : {"summary.json", "latents.json"})
      if (fs::exists(f / name)) fb += "<h4>" + std::string(name) + "</h4>" + json_html(read_json(f / name));
    if (fs::exists(f / "config.yml")) fb += "<h4>config.yml</h4><pre>" + esc(read_text(f / "config.yml")) + "</pre>";
    if (fs::exists(f / "metrics.jsonl"))
      fb += curves_html(read_curves(f / "metrics.jsonl"), label + "/" + f.filename().string());
    fb += pngs_in(f);  // PAE samples and interpolations (pae-flow sample / interpolate)
    body += section("flow", "Flow: " + f.filename().string(), fb);
    if (!fs::equivalent(f.parent_path(), run)) body += evaluations_html(f);
  }
  body += "<h3>Evaluations</h3>\n" + evaluations_html(run);
  return "<section class=\"run\" id=\"run-" + std::to_string(index) + "\"><h2>Run: " + esc(run.string()) + "</h2>\n" +
         body + "</section>\n";
}

/// Several runs: each validation (else training) curve of each term, one line per run, and
/// their summaries side by side.
std::string comparison_html(const std::vector<fs::path>& runs) {
  std::map<std::string, std::vector<Series>> by_key;
  for (const auto& r : runs) {
    if (!fs::exists(r / "metrics.jsonl")) continue;
    const auto c = read_curves(r / "metrics.jsonl");
    for (const auto& [k, col] : c.columns)
      if (k.rfind("val_", 0) == 0 || k.rfind("train_", 0) == 0) by_key[k].push_back({r.string(), c.epochs, col});
  }
  std::string plots;
  for (const auto& [k, s] : by_key) {
    PlotOptions o;
    o.title = k;
    o.x_label = "epoch";
    o.y_label = k;
    o.log_y = wide_positive(s);
    plots += "<div class=\"plot\">" + line_plot(s, o) + "</div>\n";
  }
  json table = json::array();
  for (const auto& r : runs) {
    json row = {{"run", r.string()}};
    if (fs::exists(r / "summary.json")) {
      const auto s = read_json(r / "summary.json");
      for (const auto& [k, v] : s.items())
        if (v.is_object())
          for (const auto& [k2, v2] : v.items()) row[k + "." + k2] = v2;
        else
          row[k] = v;
    }
    table.push_back(row);
  }
  return "<section class=\"comparison\"><h2>Comparison</h2>\n" + section("summary", "Summaries", json_html(table)) +
         section("curves", "Curves", plots) + "</section>\n";
}

const char* kStyle = R"(body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
h2{border-bottom:2px solid #444;margin-top:2em}h3{margin-top:1.5em;color:#333}h4{margin:.8em 0 .3em}
table{border-collapse:collapse;font-size:13px;margin:.3em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
table.kv th{background:#f4f4f4}table.rows th{background:#eef}pre{background:#f7f7f7;padding:.6em;font-size:12px;overflow:auto;max-height:30em}
.plot{display:inline-block;margin:4px}figure{display:inline-block;margin:6px}figure img{image-rendering:pixelated;max-width:640px;min-width:200px}
nav a{margin-right:1em}.warning{background:#fde8e8;border:1px solid #c33;padding:.5em})";

}  // namespace

std::string html_report(const HtmlReportOptions& options) {
  require(!options.runs.empty(), "report: give at least one run directory");
  std::vector<fs::path> runs(options.runs.begin(), options.runs.end());
  const auto now = std::time(nullptr);
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::string title = "pae report: ";
  for (size_t i = 0; i < runs.size(); ++i) title += (i ? ", " : "") + runs[i].string();
  std::string body = "<h1>" + esc(title) + "</h1>\n<p>Made by <code>pae-eval report</code> on " + when + ".</p>\n<nav>";
  for (size_t i = 0; i < runs.size(); ++i)
    body += "<a href=\"#run-" + std::to_string(i) + "\">" + esc(runs[i].string()) + "</a>";
  body += "</nav>\n";
  if (runs.size() > 1) body += comparison_html(runs);
  for (size_t i = 0; i < runs.size(); ++i) body += run_html(runs[i], i == 0 ? options.flow : "", i, options.strict);
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + esc(title) + "</title><style>" +
         kStyle + "</style></head>\n<body>\n" + body + "</body></html>\n";
}

std::string write_html_report(const HtmlReportOptions& options, std::string path, bool force) {
  require(!path.empty() || options.runs.size() == 1, "report: give -o FILE for several runs");
  if (path.empty()) path = (fs::path(options.runs.front()) / "report.html").string();
  require(force || !fs::exists(path), path + " exists: pass --force to replace it, or -o another file");
  const auto t0 = std::chrono::steady_clock::now();
  atomic_write_text(path, html_report(options));
  spdlog::info("wrote {} ({:.0f} KiB in {:.2f} s)", path, double(fs::file_size(path)) / 1024,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return path;
}

}  // namespace pae::report
