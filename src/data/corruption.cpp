#include "pae/data/corruption.h"

#include <ATen/CPUGeneratorImpl.h>
#include <stb_image.h>
#include <torch/torch.h>

#include <type_traits>

#include "pae/util/error.h"

namespace pae::data {

namespace {

/// The whole of `text` as a T (int64_t or double), else an error naming the spec.
template <class T>
T parse_number(const std::string& text, const std::string& spec) {
  size_t used = 0;
  T v{};
  try {
    if constexpr (std::is_integral_v<T>) {
      v = std::stoll(text, &used);
    } else {
      v = std::stod(text, &used);
    }
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == text.size() && !text.empty(),
          "corruption '" + spec + "': '" + text + "' is not " + (std::is_integral_v<T> ? "an integer" : "a number"));
  return v;
}

const char* kKinds = "left, right, top, bottom, columns:A-B, center:S, random:F, png:PATH or noise:SIGMA[:noclip]";

/// The user's mask: [H,W] bool, true where missing (white).
at::Tensor read_png_mask(const std::string& path, int64_t h, int64_t w) {
  int pw = 0, ph = 0, n = 0;
  const auto reason = [] {
    return std::string(stbi_failure_reason() ? stbi_failure_reason() : "not an image stb_image reads, or corrupt");
  };
  // The size from the header first: nothing is decoded (or allocated) for an image of the wrong size.
  require(stbi_info(path.c_str(), &pw, &ph, &n) != 0, "mask " + path + ": cannot read the image (" + reason() + ")");
  require(ph == h && pw == w, "mask " + path + " is " + std::to_string(pw) + "x" + std::to_string(ph) +
                                  " pixels; the auto-encoder takes " + std::to_string(w) + "x" + std::to_string(h));
  unsigned char* px = stbi_load(path.c_str(), &pw, &ph, &n, 1);
  require(px != nullptr && ph == h && pw == w, "mask " + path + ": cannot read the image (" + reason() + ")");
  const auto grey = torch::from_blob(px, {ph, pw}, torch::kUInt8).clone();
  stbi_image_free(px);
  return grey >= 128;
}

}  // namespace

Corruption parse_corruption(const std::string& spec, const std::vector<int64_t>& shape) {
  require(shape.size() == 3, "corruption: image shape must be [C, H, W]");
  const int64_t h = shape[1], w = shape[2];
  Corruption c;
  c.spec = spec;
  const auto colon = spec.find(':');
  c.kind = spec.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : spec.substr(colon + 1);
  const auto needs_arg = [&](bool has) {
    require(has == !arg.empty(), "corruption '" + spec + "': expected one of " + std::string(kKinds));
  };
  if (c.kind == "left" || c.kind == "right" || c.kind == "top" || c.kind == "bottom") {
    needs_arg(false);
  } else if (c.kind == "columns") {
    needs_arg(true);
    const auto dash = arg.find('-');
    require(dash != std::string::npos, "corruption '" + spec + "': expected columns:A-B");
    c.a = parse_number<int64_t>(arg.substr(0, dash), spec);
    c.b = parse_number<int64_t>(arg.substr(dash + 1), spec);
    require(0 <= c.a && c.a <= c.b && c.b < w,
            "corruption '" + spec + "': expected 0 <= A <= B < " + std::to_string(w) + " (the image width)");
  } else if (c.kind == "center") {
    needs_arg(true);
    c.a = parse_number<int64_t>(arg, spec);
    require(c.a >= 1 && c.a <= std::min(h, w),
            "corruption '" + spec + "': the square side must be in 1.." + std::to_string(std::min(h, w)));
  } else if (c.kind == "random") {
    needs_arg(true);
    c.fraction = parse_number<double>(arg, spec);
    require(c.fraction > 0 && c.fraction < 1, "corruption '" + spec + "': the fraction must be in (0, 1)");
  } else if (c.kind == "png") {
    needs_arg(true);
    c.path = arg;
    read_png_mask(c.path, h, w);  // errors now, before any work
  } else if (c.kind == "noise") {
    needs_arg(true);
    std::string s = arg;
    const auto second = arg.find(':');
    if (second != std::string::npos) {
      require(arg.substr(second + 1) == "noclip",
              "corruption '" + spec + "': expected noise:SIGMA or noise:SIGMA:noclip");
      c.clip = false;
      s = arg.substr(0, second);
    }
    c.sigma = parse_number<double>(s, spec);
    require(c.sigma > 0, "corruption '" + spec + "': sigma must be positive");
  } else {
    throw Error("corruption '" + spec + "': expected one of " + std::string(kKinds));
  }
  return c;
}

Corrupted corrupt(const Corruption& c, const at::Tensor& x, uint64_t seed) {
  require(x.dim() == 4, "corrupt: images must be [N, C, H, W]");
  const int64_t n = x.size(0), ch = x.size(1), h = x.size(2), w = x.size(3);
  auto gen = at::detail::createCPUGenerator(seed);
  const auto cpu = x.to(torch::kCPU, torch::kFloat);
  if (c.is_noise()) {
    auto noisy = cpu + c.sigma * at::randn(cpu.sizes(), gen, cpu.options());
    if (c.clip) noisy = noisy.clamp(0, 1);
    return {noisy, torch::ones(cpu.sizes(), torch::kBool)};
  }
  auto missing = torch::zeros({n, 1, h, w}, torch::kBool);
  if (c.kind == "left") {
    missing.slice(3, 0, w / 2).fill_(true);
  } else if (c.kind == "right") {
    missing.slice(3, w / 2, w).fill_(true);
  } else if (c.kind == "top") {
    missing.slice(2, 0, h / 2).fill_(true);
  } else if (c.kind == "bottom") {
    missing.slice(2, h / 2, h).fill_(true);
  } else if (c.kind == "columns") {
    missing.slice(3, c.a, c.b + 1).fill_(true);
  } else if (c.kind == "center") {
    const int64_t top = (h - c.a) / 2, left = (w - c.a) / 2;
    missing.slice(2, top, top + c.a).slice(3, left, left + c.a).fill_(true);
  } else if (c.kind == "random") {
    missing = at::rand({n, 1, h, w}, gen, torch::TensorOptions().dtype(torch::kFloat)) < c.fraction;
  } else if (c.kind == "png") {
    missing = read_png_mask(c.path, h, w).view({1, 1, h, w}).expand({n, 1, h, w}).clone();
  }
  const auto observed = missing.logical_not().expand({n, ch, h, w}).contiguous();
  return {cpu * observed.to(torch::kFloat), observed};
}

}  // namespace pae::data
