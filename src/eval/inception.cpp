// pytorch-fid's FID Inception-v3 (Heusel et al. 2017; Szegedy et al. 2016), its module names
// kept so that its state dict loads by name.
#include <torch/torch.h>

#include <fstream>
#include <iterator>

#include "pae/eval/features.h"
#include "pae/util/error.h"

namespace pae::eval {

namespace {

namespace nn = torch::nn;
using torch::Tensor;

/// conv (no bias) + batch norm (eps 1e-3) + ReLU.
struct BasicConv : nn::Module {
  BasicConv(int64_t in, int64_t out, std::vector<int64_t> k, std::vector<int64_t> stride = {1, 1},
            std::vector<int64_t> pad = {0, 0}) {
    conv = register_module("conv", nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false)));
    bn = register_module("bn", nn::BatchNorm2d(nn::BatchNorm2dOptions(out).eps(0.001)));
  }
  Tensor forward(const Tensor& x) { return torch::relu(bn(conv(x))); }
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
};
using Conv = std::shared_ptr<BasicConv>;

Tensor avg3(const Tensor& x) {
  // pytorch-fid's blocks average without counting the padding (TF's behaviour).
  return torch::avg_pool2d(x, 3, 1, 1, /*ceil_mode=*/false, /*count_include_pad=*/false);
}

struct Block : nn::Module {
  Conv add(const std::string& name, int64_t in, int64_t out, std::vector<int64_t> k,
           std::vector<int64_t> stride = {1, 1}, std::vector<int64_t> pad = {0, 0}) {
    return register_module(name, std::make_shared<BasicConv>(in, out, k, stride, pad));
  }
  virtual Tensor forward(const Tensor& x) = 0;
};

struct InceptionA : Block {  // Mixed_5b..d
  InceptionA(int64_t in, int64_t pool) {
    b1 = add("branch1x1", in, 64, {1, 1});
    b5_1 = add("branch5x5_1", in, 48, {1, 1});
    b5_2 = add("branch5x5_2", 48, 64, {5, 5}, {1, 1}, {2, 2});
    d1 = add("branch3x3dbl_1", in, 64, {1, 1});
    d2 = add("branch3x3dbl_2", 64, 96, {3, 3}, {1, 1}, {1, 1});
    d3 = add("branch3x3dbl_3", 96, 96, {3, 3}, {1, 1}, {1, 1});
    bp = add("branch_pool", in, pool, {1, 1});
  }
  Tensor forward(const Tensor& x) override {
    return torch::cat({b1->forward(x), b5_2->forward(b5_1->forward(x)), d3->forward(d2->forward(d1->forward(x))),
                       bp->forward(avg3(x))},
                      1);
  }
  Conv b1, b5_1, b5_2, d1, d2, d3, bp;
};

struct InceptionB : Block {  // Mixed_6a
  explicit InceptionB(int64_t in) {
    b3 = add("branch3x3", in, 384, {3, 3}, {2, 2});
    d1 = add("branch3x3dbl_1", in, 64, {1, 1});
    d2 = add("branch3x3dbl_2", 64, 96, {3, 3}, {1, 1}, {1, 1});
    d3 = add("branch3x3dbl_3", 96, 96, {3, 3}, {2, 2});
  }
  Tensor forward(const Tensor& x) override {
    return torch::cat({b3->forward(x), d3->forward(d2->forward(d1->forward(x))), torch::max_pool2d(x, 3, 2)}, 1);
  }
  Conv b3, d1, d2, d3;
};

struct InceptionC : Block {  // Mixed_6b..e
  InceptionC(int64_t in, int64_t c7) {
    b1 = add("branch1x1", in, 192, {1, 1});
    s1 = add("branch7x7_1", in, c7, {1, 1});
    s2 = add("branch7x7_2", c7, c7, {1, 7}, {1, 1}, {0, 3});
    s3 = add("branch7x7_3", c7, 192, {7, 1}, {1, 1}, {3, 0});
    d1 = add("branch7x7dbl_1", in, c7, {1, 1});
    d2 = add("branch7x7dbl_2", c7, c7, {7, 1}, {1, 1}, {3, 0});
    d3 = add("branch7x7dbl_3", c7, c7, {1, 7}, {1, 1}, {0, 3});
    d4 = add("branch7x7dbl_4", c7, c7, {7, 1}, {1, 1}, {3, 0});
    d5 = add("branch7x7dbl_5", c7, 192, {1, 7}, {1, 1}, {0, 3});
    bp = add("branch_pool", in, 192, {1, 1});
  }
  Tensor forward(const Tensor& x) override {
    auto dbl = d5->forward(d4->forward(d3->forward(d2->forward(d1->forward(x)))));
    return torch::cat({b1->forward(x), s3->forward(s2->forward(s1->forward(x))), dbl, bp->forward(avg3(x))}, 1);
  }
  Conv b1, s1, s2, s3, d1, d2, d3, d4, d5, bp;
};

struct InceptionD : Block {  // Mixed_7a
  explicit InceptionD(int64_t in) {
    t1 = add("branch3x3_1", in, 192, {1, 1});
    t2 = add("branch3x3_2", 192, 320, {3, 3}, {2, 2});
    s1 = add("branch7x7x3_1", in, 192, {1, 1});
    s2 = add("branch7x7x3_2", 192, 192, {1, 7}, {1, 1}, {0, 3});
    s3 = add("branch7x7x3_3", 192, 192, {7, 1}, {1, 1}, {3, 0});
    s4 = add("branch7x7x3_4", 192, 192, {3, 3}, {2, 2});
  }
  Tensor forward(const Tensor& x) override {
    return torch::cat({t2->forward(t1->forward(x)), s4->forward(s3->forward(s2->forward(s1->forward(x)))),
                       torch::max_pool2d(x, 3, 2)},
                      1);
  }
  Conv t1, t2, s1, s2, s3, s4;
};

struct InceptionE : Block {  // Mixed_7b (average pool) and Mixed_7c (max pool), as pytorch-fid
  InceptionE(int64_t in, bool max_pool) : max_pool_(max_pool) {
    b1 = add("branch1x1", in, 320, {1, 1});
    t1 = add("branch3x3_1", in, 384, {1, 1});
    t2a = add("branch3x3_2a", 384, 384, {1, 3}, {1, 1}, {0, 1});
    t2b = add("branch3x3_2b", 384, 384, {3, 1}, {1, 1}, {1, 0});
    d1 = add("branch3x3dbl_1", in, 448, {1, 1});
    d2 = add("branch3x3dbl_2", 448, 384, {3, 3}, {1, 1}, {1, 1});
    d3a = add("branch3x3dbl_3a", 384, 384, {1, 3}, {1, 1}, {0, 1});
    d3b = add("branch3x3dbl_3b", 384, 384, {3, 1}, {1, 1}, {1, 0});
    bp = add("branch_pool", in, 192, {1, 1});
  }
  Tensor forward(const Tensor& x) override {
    auto t = t1->forward(x);
    auto d = d2->forward(d1->forward(x));
    auto pool = max_pool_ ? torch::max_pool2d(x, 3, 1, 1) : avg3(x);
    return torch::cat({b1->forward(x), torch::cat({t2a->forward(t), t2b->forward(t)}, 1),
                       torch::cat({d3a->forward(d), d3b->forward(d)}, 1), bp->forward(pool)},
                      1);
  }
  bool max_pool_;
  Conv b1, t1, t2a, t2b, d1, d2, d3a, d3b, bp;
};

struct FidInception : nn::Module {
  FidInception() {
    auto conv = [&](const std::string& n, int64_t in, int64_t out, std::vector<int64_t> k,
                    std::vector<int64_t> s = {1, 1}, std::vector<int64_t> p = {0, 0}) {
      return register_module(n, std::make_shared<BasicConv>(in, out, k, s, p));
    };
    c1a = conv("Conv2d_1a_3x3", 3, 32, {3, 3}, {2, 2});
    c2a = conv("Conv2d_2a_3x3", 32, 32, {3, 3});
    c2b = conv("Conv2d_2b_3x3", 32, 64, {3, 3}, {1, 1}, {1, 1});
    c3b = conv("Conv2d_3b_1x1", 64, 80, {1, 1});
    c4a = conv("Conv2d_4a_3x3", 80, 192, {3, 3});
    blocks = {register_module("Mixed_5b", std::make_shared<InceptionA>(192, 32)),
              register_module("Mixed_5c", std::make_shared<InceptionA>(256, 64)),
              register_module("Mixed_5d", std::make_shared<InceptionA>(288, 64)),
              register_module("Mixed_6a", std::make_shared<InceptionB>(288)),
              register_module("Mixed_6b", std::make_shared<InceptionC>(768, 128)),
              register_module("Mixed_6c", std::make_shared<InceptionC>(768, 160)),
              register_module("Mixed_6d", std::make_shared<InceptionC>(768, 160)),
              register_module("Mixed_6e", std::make_shared<InceptionC>(768, 192)),
              register_module("Mixed_7a", std::make_shared<InceptionD>(768)),
              register_module("Mixed_7b", std::make_shared<InceptionE>(1280, false)),
              register_module("Mixed_7c", std::make_shared<InceptionE>(2048, true))};
  }
  /// x:[B,3,299,299] in [-1, 1] -> [B,2048].
  Tensor forward(const Tensor& x) {
    auto h = torch::max_pool2d(c2b->forward(c2a->forward(c1a->forward(x))), 3, 2);
    h = torch::max_pool2d(c4a->forward(c3b->forward(h)), 3, 2);
    for (auto& b : blocks) h = b->forward(h);
    return torch::adaptive_avg_pool2d(h, {1, 1}).flatten(1);
  }
  Conv c1a, c2a, c2b, c3b, c4a;
  std::vector<std::shared_ptr<Block>> blocks;
};

class InceptionFeatures : public FeatureExtractor {
 public:
  InceptionFeatures(std::shared_ptr<FidInception> net, std::string weights, InceptionProtocol protocol, int64_t batch)
      : net_(std::move(net)), weights_(std::move(weights)), protocol_(protocol), batch_(batch) {}

  at::Tensor features(const at::Tensor& images) override {
    require(images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3),
            "Inception features: expected images [N,1|3,H,W]");
    torch::NoGradGuard no_grad;
    net_->eval();
    std::vector<at::Tensor> parts;
    for (int64_t i = 0; i < images.size(0); i += batch_) {
      auto x = images.slice(0, i, i + batch_).to(torch::kFloat32);
      if (protocol_ == InceptionProtocol::kPerImageMinMax) {
        auto flat = x.flatten(1);
        auto lo = std::get<0>(flat.min(1, true)), hi = std::get<0>(flat.max(1, true));
        x = ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(x);
      }
      if (x.size(1) == 1) x = x.expand({x.size(0), 3, x.size(2), x.size(3)});
      x = torch::nn::functional::interpolate(x, torch::nn::functional::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{299, 299})
                                                    .mode(torch::kBilinear)
                                                    .align_corners(false));
      parts.push_back(net_->forward(2 * x - 1));
    }
    return torch::cat(parts);
  }
  std::string describe() const override {
    return "pytorch-fid Inception-v3 (" + weights_ +
           "), 2048-d pool features, grey tiled to 3 channels, bilinear "
           "resize to 299 (align_corners false), [-1, 1]" +
           (protocol_ == InceptionProtocol::kPerImageMinMax ? ", per-image min-max first (PAE paper)" : "");
  }

 private:
  std::shared_ptr<FidInception> net_;
  std::string weights_;
  InceptionProtocol protocol_;
  int64_t batch_;
};

}  // namespace

std::shared_ptr<FeatureExtractor> inception_v3(const std::string& weights, InceptionProtocol protocol, int64_t batch) {
  std::ifstream in(weights, std::ios::binary);
  require(bool(in), "Inception weights " + weights + " cannot be read (scripts/fetch_inception.sh makes it)");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw Error("Inception weights " + weights + " are not a torch.save'd dict of tensors (" +
                std::string(e.what()).substr(0, std::string(e.what()).find('\n')) + ")");
  }
  require(value.isGenericDict(), "Inception weights " + weights + ": expected a dict name -> tensor");
  std::map<std::string, at::Tensor> tensors;
  for (const auto& kv : value.toGenericDict())
    if (kv.key().isString() && kv.value().isTensor()) tensors[kv.key().toStringRef()] = kv.value().toTensor();
  auto net = std::make_shared<FidInception>();
  torch::NoGradGuard no_grad;
  auto load = [&](const std::string& name, at::Tensor& dst) {
    auto it = tensors.find(name);
    const std::string optional = "num_batches_tracked";  // not needed in evaluation mode
    if (it == tensors.end() && name.size() >= optional.size() &&
        name.compare(name.size() - optional.size(), optional.size(), optional) == 0)
      return;
    require(it != tensors.end(), "Inception weights " + weights + ": no tensor '" + name + "'");
    require(it->second.sizes() == dst.sizes(), "Inception weights " + weights + ": '" + name + "' has shape " +
                                                   c10::str(it->second.sizes()) + ", expected " +
                                                   c10::str(dst.sizes()));
    dst.copy_(it->second);
  };
  for (auto& p : net->named_parameters()) load(p.key(), p.value());
  for (auto& b : net->named_buffers()) load(b.key(), b.value());
  return std::make_shared<InceptionFeatures>(net, weights, protocol, batch);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> inception_v3_tensor_shapes() {
  FidInception net;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (auto& p : net.named_parameters()) out.emplace_back(p.key(), p.value().sizes().vec());
  for (auto& b : net.named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) out.emplace_back(b.key(), b.value().sizes().vec());
  return out;
}

}  // namespace pae::eval
