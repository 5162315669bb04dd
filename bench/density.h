// pae-bench density: flows fitted on the known-density sets, against the truth.
#pragma once
#include <string>
#include <vector>

struct DensityBenchOptions {
  std::vector<int64_t> dims = {2, 8, 32};
  std::vector<std::string> sets;  ///< empty: every set of each dimension
  std::string config = "configs/fmnist_nsf.yml";
  std::vector<std::string> overrides;  ///< --set for the flow config
  /// Training points: as many as the Fashion-MNIST latents the shipped flow configs are made for
  /// (55,000; with 20,000, fits without dropout ended 0.5-1.3 nats further from the truth in 32-D).
  int64_t n_train = 50000, n_val = 5000, n_test = 10000;
  std::string work = "runs/bench_density";
  std::string out;  ///< markdown table (default WORK/results.md)
};

/// Fits the config's flow on each set, prints a JSON line per set and writes the table.
int bench_density(const DensityBenchOptions& options);
