// pae-bench dnf-spiral: the DNF on the thin spiral with the authors' settings, against the truth.
#pragma once
#include <cstdint>
#include <string>

/// Trains the DNF, a standard NSF and the PAE (an AE with d = 1 plus a flow on its latents) for
/// `epochs` on 9,000 points of the thin spiral, then prints a JSON line for each (the learned
/// density of the position along the spiral against the true one: KS statistic, KL divergence and
/// the mass on the grid; the samples' mean distance to the curve; seconds) and writes
/// OUT/dnf_spiral.svg (the densities) and OUT/dnf_spiral.jsonl.
int bench_dnf_spiral(int64_t epochs, const std::string& out_dir);
