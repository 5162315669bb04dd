// One self-contained HTML page per run (or several runs side by side): the resolved config,
// training curves from metrics.jsonl as inline SVG, the run's image grids, its flows, and every
// evaluation report found under it (OoD with ROC curves and score histograms, reconstruction,
// FID, Parzen, inpainting/denoising panels), each with the protocol it names. No external
// assets and no JavaScript: images are data URIs, plots inline SVG.
#pragma once
#include <string>
#include <vector>

namespace pae::report {

struct HtmlReportOptions {
  std::vector<std::string> runs;  ///< auto-encoder (or flow, or classifier) run directories
  std::string flow;               ///< an extra flow run to include with the first run (optional)
  bool strict = false;            ///< refuse a run that did not finish (else a warning, and the page says so)
};

/// The page's HTML. Errors name the run or file that cannot be read.
std::string html_report(const HtmlReportOptions& options);

/// Writes html_report to `path` (empty: RUN/report.html for a single run) atomically and logs its
/// size and build time; an existing file is replaced only with `force`. Returns the path.
std::string write_html_report(const HtmlReportOptions& options, std::string path, bool force);

}  // namespace pae::report
