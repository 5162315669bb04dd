#include "density.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/flows/density_sets.h"
#include "pae/train/flow_run.h"
#include "pae/util/fs.h"
#include "pae/util/json.h"

int bench_density(const DensityBenchOptions& o) {
  using namespace pae;
  const Config config = load_config(o.config, o.overrides);
  std::string table =
      "# Flows against known densities\n\nMade by `pae-bench density` with `" + o.config +
      "`: test log-likelihood in nats per sample (mean over " + std::to_string(o.n_test) + " test points; " +
      std::to_string(o.n_train) + " training, " + std::to_string(o.n_val) +
      " validation), of the flow, of a full-covariance Gaussian fitted to the training set, and of the true "
      "density; the gap is truth - flow.\n\n| dim | set | flow | Gaussian | truth | gap | epochs | seconds |\n| --- | "
      "--- "
      "| --- | --- | --- | --- | --- | --- |\n";
  for (const int64_t dim : o.dims) {
    for (const auto& name : flows::density_set_names(dim)) {
      if (!o.sets.empty() && std::find(o.sets.begin(), o.sets.end(), name) == o.sets.end()) continue;
      const auto d = flows::make_density(name, dim, 0);
      const fs::path dir = fs::path(o.work) / (std::to_string(dim) + "d_" + name);
      ensure_dir(dir);
      train::LatentSources src{(dir / "train.npy").string(), (dir / "val.npy").string(), (dir / "test.npy").string()};
      data::write_npy(src.train, d->sample(o.n_train, 1).to(torch::kFloat32));
      data::write_npy(src.val, d->sample(o.n_val, 2).to(torch::kFloat32));
      const auto test = d->sample(o.n_test, 3);
      data::write_npy(src.test, test.to(torch::kFloat32));
      // The truth at the float32 points the flow sees.
      const double truth = d->log_prob(test.to(torch::kFloat32).to(torch::kFloat64)).mean().item<double>();
      train::RunOptions ro;
      ro.run_dir = (dir / "flow").string();
      ro.force = true;
      ro.quiet = true;
      const auto t0 = std::chrono::steady_clock::now();
      const auto fit = train::fit_latent_flow(config, src, ro);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double flow = fit.mean_log_prob.at("test"), gauss = fit.gaussian_log_prob.at("test");
      std::printf("%s\n", JsonObject()
                              .add("dim", dim)
                              .add("set", name)
                              .add("flow", flow)
                              .add("gaussian", gauss)
                              .add("truth", truth)
                              .add("gap", truth - flow)
                              .add("epochs", fit.epochs)
                              .add("seconds", seconds)
                              .str()
                              .c_str());
      std::fflush(stdout);
      char row[256];
      std::snprintf(row, sizeof row, "| %lld | %s | %.3f | %.3f | %.3f | %.3f | %lld | %.0f |\n", (long long)dim,
                    name.c_str(), flow, gauss, truth, truth - flow, (long long)fit.epochs, seconds);
      table += row;
    }
  }
  const std::string out = o.out.empty() ? (fs::path(o.work) / "results.md").string() : o.out;
  atomic_write_text(out, table);
  spdlog::info("wrote {}", out);
  return 0;
}
