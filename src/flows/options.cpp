#include "pae/flows/options.h"

namespace pae::flows {

void FlowOptions::visit(OptionVisitor& v) {
  v("type", type, one_of({"nsf", "realnvp"}));
  v("layers", layers, positive());
  v("hidden", hidden, in_range(1, 1 << 16));
  v("hidden_layers", hidden_layers, positive());
  v("conditioner", conditioner, one_of({"mlp", "resnet"}));
  v("bins", bins, at_least(2));
  v("tail_bound", tail_bound, positive());
  const auto below_one_bin = [this](double w) { return w > 0 && w * double(bins) < 1; };
  v("min_bin_width", min_bin_width, number_where(below_one_bin, "0 < width < 1/bins"));
  v("min_bin_height", min_bin_height, number_where(below_one_bin, "0 < height < 1/bins"));
  v("min_derivative", min_derivative, number_where([](double d) { return d > 0 && d < 1; }, "a number in (0, 1)"));
  v("permutation", permutation, one_of({"reverse", "random", "lu"}));
  v("actnorm", actnorm, any_value());
  v("batch_norm", batch_norm, any_value());
  v("dropout", dropout, in_half_open(0, 1));
  v("dropout_anneal", dropout_anneal,
    number_where([](double a) { return a > 0 && a <= 1; }, "a fraction of the epochs in (0, 1]"));
  v("tails", tails, one_of({"linear", "asinh"}));
  v("seed", seed, any_value());
}

}  // namespace pae::flows
