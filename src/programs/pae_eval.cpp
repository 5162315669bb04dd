// pae-eval: measurements of a trained PAE, each protocol choice named in its JSON report.
//   pae-eval ood     OoD detection: per-sample scores, AUROC / AP / FPR@95%TPR, ROC curves
//   pae-eval recon   reconstruction MSE per pixel on a split (mean and per-image distribution)
//   pae-eval parzen  Parzen-window log-likelihood of generated samples (the AAE protocol)
//   pae-eval fid     Fréchet distance of generated sets to a reference split
//   pae-eval inpaint / denoise   posterior restoration of masked / noisy images with uncertainty
//   pae-eval report  one self-contained HTML page of a run (curves, images, every report found)
// The work is in pae/eval/reports.h; this file parses flags and says where results went.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "command_line.h"
#include "pae/eval/reports.h"
#include "pae/eval/restore.h"
#include "pae/nn/blas.h"
#include "pae/report/html.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/runtime.h"
#include "pae/util/text.h"
#include "restore_flags.h"

using pae::split_list;

int main(int argc, char** argv) {
  pae::ensure_fast_blas_kernels(argc, argv);
  pae::init_program();
  CLI::App app{"pae-eval: OoD detection, reconstruction error, FID and Parzen likelihood of a trained PAE"};
  app.require_subcommand(1);
  std::string ae_run, flow_dir, out, checkpoint, device;
  bool force = false, strict = false;
  int64_t limit = 0;
  auto common = [&](CLI::App* sub, bool with_flow) {
    sub->add_option("--ae-run", ae_run, "auto-encoder run directory")->required();
    sub->add_option("--checkpoint", checkpoint,
                    "the run's checkpoint to measure: best | last | phase_<name> (default: its train.model_checkpoint; "
                    "phase_ae is an NAE's AE before phase 2)");
    if (with_flow) sub->add_option("--flow", flow_dir, "flow run directory (pae-flow)");
    sub->add_option("-d,--device", device, "cpu | cuda | cuda:N | auto (default: the run's train.device, or the CPU)");
    sub->add_option("-o,--out", out, "output directory");
    sub->add_flag("--force", force, "replace an existing report");
    sub->add_flag("--strict", strict, "refuse a run that did not finish (killed, failed, stopped) instead of warning");
    sub->add_option("--limit", limit, "first N images of each set (0 = all)")->check(CLI::NonNegativeNumber);
  };
  pae::eval::OodOptions oo;
  std::string ood_specs = "mnist:test,noise,constant,constant-gray", scores;
  auto* ood = app.add_subcommand("ood", "OoD detection: AUROC, AP and FPR@95%TPR of every score on every OoD set");
  common(ood, true);
  ood->add_option("--in", oo.in, "in-distribution set (default: the AE's own dataset, test split)");
  ood->add_option("--ood", ood_specs,
                  "comma-separated OoD sets: name[:split], npy:PATH, folder:PATH, noise, holdout (the run's "
                  "data.holdout_classes; added by default for such a run), ...");
  ood->add_option("--scores", scores,
                  "comma-separated scores (default: every single score; tails:a+b combines two), the candidates of "
                  "--select-on");
  std::string select_on;
  ood->add_option("--select-on", select_on,
                  "choose the score on validation sets made from the AE's val split, never on the reported sets: "
                  "all (= " +
                      pae::joined(pae::eval::default_validation_transforms(), ", ") +
                      ") or a comma-separated list of those and pixel-shuffle");
  ood->add_option("--select-fpr", oo.select_fpr,
                  "the chosen score's threshold flags this fraction of the validation images")
      ->check(CLI::Range(0.001, 0.5));

  std::string split = "test";
  auto* recon = app.add_subcommand("recon", "reconstruction MSE per pixel on a split");
  common(recon, false);
  recon->add_option("--split", split, "train | val | test")->check(CLI::IsMember({"train", "val", "test"}));

  pae::eval::ParzenOptions po;
  auto* parzen = app.add_subcommand("parzen", "Parzen-window log-likelihood of generated samples (AAE protocol)");
  common(parzen, true);
  parzen->add_option("--samples", po.samples, "generated samples (kernel centres)")->check(CLI::PositiveNumber);
  parzen->add_option("--val", po.val, "validation images for choosing sigma")->check(CLI::PositiveNumber);
  parzen->add_option("--sigma-min", po.sigma_min, "smallest sigma of the log grid")->check(CLI::PositiveNumber);
  parzen->add_option("--sigma-max", po.sigma_max, "largest sigma of the log grid")->check(CLI::PositiveNumber);
  parzen->add_option("--sigma-steps", po.sigma_steps, "grid size")->check(CLI::PositiveNumber);

  pae::eval::FidOptions fo;
  std::string fid_sets;
  auto* fid = app.add_subcommand("fid", "Fréchet distance of generated sets to a reference split");
  common(fid, true);
  fid->add_option(
      "--sets", fid_sets,
      "comma-separated: recon, flow, flow:T (at temperature T), flow:auto (T of the lowest FID against the val split), "
      "prior, data, npy:FILE (default recon,flow,prior)");
  fid->add_option("--ref", fo.ref, "reference split of the AE's dataset")
      ->check(CLI::IsMember({"train", "val", "test"}));
  fid->add_option("--recon-split", fo.generate.recon_split, "split reconstructed for 'recon' (and used for 'data')")
      ->check(CLI::IsMember({"train", "val", "test"}));
  fid->add_option("--n", fo.generate.n, "samples per set (and reference images)")->check(CLI::PositiveNumber);
  fid->add_option("--min-samples", fo.min_samples, "refuse sets smaller than this")->check(CLI::PositiveNumber);
  fid->add_option("--temperature", fo.generate.temperature, "temperature of PAE samples")->check(CLI::Range(0.0, 10.0));
  fid->add_option("--extractor", fo.extractor, "domain | inception")->check(CLI::IsMember({"domain", "inception"}));
  fid->add_option("--classifier", fo.extractor_options.classifier_dir,
                  "domain classifier run of pae-train (default runs/classifiers/<dataset>)");
  fid->add_option("--inception-weights", fo.extractor_options.inception_weights, "converted pytorch-fid weights");
  fid->add_option("--protocol", fo.extractor_options.protocol,
                  "inception preprocessing: pae (per-image min-max) | plain")
      ->check(CLI::IsMember({"pae", "plain"}));
  pae::programs::RestoreFlags restore;
  auto* inpaint = app.add_subcommand("inpaint", "fill missing pixels: MAP + Laplace posterior, uncertainty, baselines");
  auto* denoise =
      app.add_subcommand("denoise", "remove Gaussian noise: MAP + Laplace posterior, uncertainty, baselines");
  restore.add(inpaint, denoise, [&](CLI::App* sub) { common(sub, true); });
  pae::report::HtmlReportOptions hro;
  std::string report_out;
  auto* report = app.add_subcommand("report", "one self-contained HTML page of a run, or of several side by side");
  report->add_option("runs", hro.runs, "run directories (auto-encoder, flow or classifier)")->required();
  report->add_option("--flow", hro.flow, "a flow run to show with the first run (flows inside a run are found)");
  report->add_option("-o,--out", report_out, "output HTML file (default RUN/report.html; needed for several runs)");
  report->add_flag("--force", force, "replace an existing report");
  report->add_flag("--strict", hro.strict, "refuse a run that did not finish (killed, failed, stopped)");
  if (const int status = pae::programs::parse_command_line(app, argc, argv); status >= 0) return status;
  return pae::run_guarded([&]() -> int {
    if (*report) {
      pae::report::write_html_report(hro, report_out, force);
      return 0;
    }
    pae::warn_if_slow_blas();
    pae::nn::blas::sgemm_library();  // a bad PAE_SGEMM is refused here, before any output
    pae::configure_threads({});
    auto pae = pae::eval::Pae::load(ae_run, flow_dir, checkpoint, device, strict);
    // Reports go beside the model they measure: the flow run when there is one; another
    // checkpoint than the run's model gets its own folder (RUN/checkpoint_<name>).
    const bool default_out = out.empty();
    if (default_out) out = flow_dir.empty() || *recon ? ae_run : flow_dir;
    if (default_out && pae.checkpoint() != pae.config().train.model_checkpoint)
      out = (pae::fs::path(out) / ("checkpoint_" + pae.checkpoint())).string();
    if (*ood) {
      if (default_out) out = (pae::fs::path(out) / "ood").string();
      oo.ood = split_list(ood_specs);
      // A hold-out run's own OoD set comes first unless the user named the sets.
      if (ood->count("--ood") == 0 && !pae.config().data.holdout_classes.empty())
        oo.ood.insert(oo.ood.begin(), "holdout");
      oo.scores = split_list(scores);
      oo.select_on = select_on == "all" ? pae::eval::default_validation_transforms() : split_list(select_on);
      if (ood->count("--select-on")) pae::require(!oo.select_on.empty(), "--select-on: no validation transform given");
      oo.limit = limit;
      std::printf("%s", pae::eval::write_ood(pae, oo, out, force).c_str());
    } else if (*recon) {
      std::printf("%s", pae::eval::write_recon(pae, split, limit, out, force).c_str());
    } else if (*fid) {
      fo.sets = split_list(fid_sets);
      if (!fid_sets.empty()) pae::require(!fo.sets.empty(), "--sets: no set given");
      std::printf("%s", pae::eval::write_fid(pae, fo, out, force).c_str());
    } else if (*inpaint || *denoise) {
      const auto corruption = restore.corruption(bool(*inpaint), pae.image_shape());
      if (default_out) out = (pae::fs::path(out) / pae::eval::restore_folder(corruption)).string();
      const pae::eval::ReportFolder folder(out, "restore.json", force);
      const auto& report_path = folder.path();
      std::printf("%s\n",
                  pae::eval::run_restore(pae, restore.set, restore.n, corruption, restore.options, out).c_str());
      spdlog::info("wrote {}, panels.png and the arrays as .npy", report_path);
    } else {
      po.limit = limit;
      std::printf("%s", pae::eval::write_parzen(pae, po, out, force).c_str());
    }
    return 0;
  });
}
