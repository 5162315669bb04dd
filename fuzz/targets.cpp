#include "targets.h"

#include <torch/torch.h>

#include <stdexcept>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/data/readers.h"
#include "pae/models/autoencoder.h"
#include "pae/train/checkpoint.h"
#include "pae/util/error.h"

namespace pae::fuzz {

namespace {
const char* kSource = "fuzz-input";
void check(bool cond, const std::string& what) {
  if (!cond) throw std::logic_error("fuzz invariant broken: " + what);
}
}  // namespace

void idx(const std::string& bytes) {
  const std::string raw = data::gunzip_if_needed(bytes, kSource);
  try {
    const auto t = data::parse_idx(raw, kSource);
    if (t.numel() > 0) (void)t.to(torch::kDouble).sum();  // touch every element
  } catch (const Error&) {
    const auto [x, y] = data::parse_cifar_batch(raw, kSource);
    check(x.size(0) == y.size(0) && x.size(1) == 3, "CIFAR images and labels disagree");
  }
}

void npy(const std::string& bytes) {
  const auto t = data::parse_npy(bytes, kSource);
  if (t.numel() > 0) (void)t.to(torch::kDouble).sum();
}

void image(const std::string& bytes) {
  if (bytes.empty()) return;
  const auto o = static_cast<unsigned char>(bytes[0]);
  data::ImageFolderOptions options;
  options.channels = (o & 1) ? 3 : 1;
  options.invert = (o & 2) != 0;
  options.size = 1 + (o >> 2);
  const auto t = data::decode_image(bytes.substr(1), kSource, options);
  check(t.sizes() == torch::IntArrayRef({options.channels, options.size, options.size}), "decoded image shape");
  check(t.min().item<float>() >= 0 && t.max().item<float>() <= 1, "decoded pixels outside [0, 1]");
}

void config(const std::string& bytes) {
  const Config c = parse_config(bytes, kSource);
  const std::string yaml = to_yaml(c);
  const Config again = parse_config(yaml, std::string(kSource) + " (written back)");
  check(to_yaml(again) == yaml, "the resolved config does not read back to itself");
  (void)config_changes(to_yaml(parse_config("", kSource)), yaml);
}

void checkpoint(const std::string& bytes) {
  // The model of the seed checkpoint (tests/fuzz_corpus/config/npy_mlp.yml trained it).
  static const Config c = [] {
    Config d = parse_config("", kSource);
    d.model.arch = "mlp";
    d.model.hidden = {16};
    d.model.latent_dim = 3;
    return d;
  }();
  auto model = models::build_autoencoder(c.model, {1, 8, 8});
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-3));
  const auto state = train::load_checkpoint_bytes(bytes, kSource, *model, {{"ae", &adam}}, model->signature());
  if (!state.config_yaml.empty()) (void)parse_config(state.config_yaml, std::string(kSource) + " config");
}

const std::map<std::string, std::function<void(const std::string&)>>& targets() {
  static const std::map<std::string, std::function<void(const std::string&)>> all = {
      {"idx", idx}, {"npy", npy}, {"image", image}, {"config", config}, {"checkpoint", checkpoint}};
  return all;
}

void run(const std::function<void(const std::string&)>& target, const std::string& bytes) {
  try {
    target(bytes);
  } catch (const Error& e) {
    if (std::string(e.what()).find(kSource) == std::string::npos)
      throw std::logic_error(std::string("a refusal that does not name its file: ") + e.what());
  }
}

}  // namespace pae::fuzz
