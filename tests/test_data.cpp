#include <gtest/gtest.h>
#include <stb_image_write.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "pae/data/dataset.h"
#include "pae/data/npy.h"
#include "pae/data/readers.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;
using namespace pae::data;
using pae::testing::error_of;
using pae::testing::TempDir;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// A tiny IDX dataset in `root` with the file names of the MNIST family.
void write_fake_mnist(const std::filesystem::path& root, int64_t n_train, int64_t n_test) {
  std::filesystem::create_directories(root);
  auto gen = at::detail::createCPUGenerator(7);
  for (auto [prefix, n] : {std::pair<std::string, int64_t>{"train", n_train}, {"t10k", n_test}}) {
    auto images = torch::randint(0, 256, {n, 28, 28}, gen, torch::kLong).to(torch::kUInt8);
    auto labels = (torch::arange(n) % 10).to(torch::kUInt8);
    write_idx((root / (prefix + "-images-idx3-ubyte.gz")).string(), images, true);
    write_idx((root / (prefix + "-labels-idx1-ubyte.gz")).string(), labels, true);
  }
}

}  // namespace

TEST(Idx, RoundTripRawAndGzip) {
  TempDir tmp;
  auto t = torch::randint(0, 256, {5, 3, 4}, torch::kLong).to(torch::kUInt8);
  for (bool gz : {false, true}) {
    const auto path = tmp.file(gz ? "a.idx.gz" : "a.idx");
    write_idx(path, t, gz);
    auto back = read_idx(path);
    EXPECT_EQ(back.sizes(), t.sizes());
    EXPECT_TRUE(torch::equal(back, t));
  }
}

TEST(Idx, TruncatedAndCorruptFilesGiveClearErrors) {
  TempDir tmp;
  auto t = torch::randint(0, 256, {50, 28, 28}, torch::kLong).to(torch::kUInt8);
  write_idx(tmp.file("ok.gz"), t, true);
  write_idx(tmp.file("ok.raw"), t, false);
  const std::string gz = read_bytes(tmp.file("ok.gz")), raw = read_bytes(tmp.file("ok.raw"));

  write_bytes(tmp.file("cut.gz"), gz.substr(0, gz.size() / 2));
  auto msg = error_of([&] { read_idx(tmp.file("cut.gz")); });
  EXPECT_NE(msg.find("cut.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gzip"), std::string::npos) << msg;

  std::string garbled = gz;
  for (size_t i = 20; i < 60; ++i) garbled[i] = char(0x5a);
  write_bytes(tmp.file("garbled.gz"), garbled);
  msg = error_of([&] { read_idx(tmp.file("garbled.gz")); });
  EXPECT_NE(msg.find("garbled.gz"), std::string::npos) << msg;

  write_bytes(tmp.file("cut.raw"), raw.substr(0, raw.size() - 100));
  msg = error_of([&] { read_idx(tmp.file("cut.raw")); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  write_bytes(tmp.file("magic.raw"), "\x01\x02" + raw.substr(2));
  msg = error_of([&] { read_idx(tmp.file("magic.raw")); });
  EXPECT_NE(msg.find("bad magic"), std::string::npos) << msg;

  msg = error_of([&] { read_idx(tmp.file("absent.gz")); });
  EXPECT_NE(msg.find("absent.gz"), std::string::npos) << msg;
}

TEST(Npy, RoundTripEveryDtype) {
  TempDir tmp;
  std::vector<torch::Tensor> tensors = {torch::randn({3, 4}),
                                        torch::randn({2, 1, 5}, torch::kFloat64),
                                        torch::randint(0, 256, {7}, torch::kLong).to(torch::kUInt8),
                                        torch::randint(-1000, 1000, {2, 3}, torch::kLong),
                                        torch::randint(-5, 5, {4}, torch::kLong).to(torch::kInt32),
                                        torch::randn({6, 2, 2, 2}).gt(0)};
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto path = tmp.file("t" + std::to_string(i) + ".npy");
    write_npy(path, tensors[i]);
    auto back = read_npy(path);
    EXPECT_EQ(back.scalar_type(), tensors[i].scalar_type());
    EXPECT_TRUE(torch::equal(back, tensors[i])) << i;
    // Header padded to a multiple of 64 as numpy does.
    const auto bytes = read_bytes(path);
    const size_t header_len = size_t(uint8_t(bytes[8])) | (size_t(uint8_t(bytes[9])) << 8);
    EXPECT_EQ((10 + header_len) % 64, 0u);
  }
}

TEST(Npy, RejectsBadFiles) {
  TempDir tmp;
  write_npy(tmp.file("a.npy"), torch::randn({10, 10}));
  const auto bytes = read_bytes(tmp.file("a.npy"));
  write_bytes(tmp.file("cut.npy"), bytes.substr(0, bytes.size() - 8));
  EXPECT_NE(error_of([&] { read_npy(tmp.file("cut.npy")); }).find("truncated"), std::string::npos);
  write_bytes(tmp.file("magic.npy"), "XNUMPY" + bytes.substr(6));
  EXPECT_NE(error_of([&] { read_npy(tmp.file("magic.npy")); }).find("bad magic"), std::string::npos);
  std::string fortran = bytes;
  fortran.replace(fortran.find("False"), 5, "True ");
  write_bytes(tmp.file("f.npy"), fortran);
  EXPECT_NE(error_of([&] { read_npy(tmp.file("f.npy")); }).find("Fortran"), std::string::npos);
  std::string complex = bytes;
  complex.replace(complex.find("<f4"), 3, "<c8");
  write_bytes(tmp.file("c.npy"), complex);
  EXPECT_NE(error_of([&] { read_npy(tmp.file("c.npy")); }).find("<c8"), std::string::npos);
  // Shapes: a negative dimension is an error (it was read as positive), and a header claiming
  // more than the file holds is refused before anything is allocated (10^12 elements here).
  for (const auto& [shape, expected] : std::vector<std::pair<std::string, std::string>>{
           {"(10, -10)", "'-10' is not a dimension"},
           {"(1000000, 1000000)", "claims shape (1000000, 1000000), 4000000000000 bytes, but the file holds 400"},
           {"(99999999999999999, 99999999999999999)", "too many elements"}}) {
    std::string bad = bytes;
    bad.replace(bad.find("(10, 10)"), 8, shape);
    // Keep the header length a multiple of 64: take the extra characters out of the padding.
    const auto pad = bad.find("}") + 1;
    bad.erase(pad, shape.size() - 8);
    write_bytes(tmp.file("s.npy"), bad);
    const auto msg = error_of([&] { read_npy(tmp.file("s.npy")); });
    EXPECT_NE(msg.find(expected), std::string::npos) << msg;
    EXPECT_NE(msg.find("s.npy"), std::string::npos) << msg;
  }
}

TEST(Cifar, RoundTripBinaryBatch) {
  TempDir tmp;
  const int64_t n = 4;
  auto images = torch::randint(0, 256, {n, 3, 32, 32}, torch::kLong).to(torch::kUInt8);
  auto labels = torch::tensor({3, 0, 9, 1}, torch::kLong);
  std::string bytes;
  for (int64_t i = 0; i < n; ++i) {
    bytes += char(labels[i].item<int64_t>());
    auto img = images[i].contiguous();
    bytes.append(static_cast<const char*>(img.data_ptr()), 3072);
  }
  write_bytes(tmp.file("data_batch_1.bin"), bytes);
  auto [x, y] = read_cifar_batch(tmp.file("data_batch_1.bin"));
  EXPECT_TRUE(torch::equal(x, images));
  EXPECT_TRUE(torch::equal(y, labels));
  write_bytes(tmp.file("bad.bin"), bytes.substr(0, 5000));
  EXPECT_NE(error_of([&] { read_cifar_batch(tmp.file("bad.bin")); }).find("3073"), std::string::npos);
}

TEST(ImageFolder, ReadsClassesResizesAndCrops) {
  TempDir tmp;
  // Two classes; 20x10 constant images: resizing and centre-cropping keeps the constant.
  std::vector<std::pair<std::string, uint8_t>> items = {{"cat/a.png", 200}, {"cat/b.png", 100}, {"dog/c.png", 50}};
  for (const auto& [name, v] : items) {
    std::filesystem::create_directories(tmp.path() / std::filesystem::path(name).parent_path());
    std::vector<uint8_t> px(20 * 10 * 3);
    for (size_t i = 0; i < px.size(); ++i) px[i] = (i % 3 == 0) ? v : uint8_t(v / 2);
    ASSERT_TRUE(stbi_write_png(tmp.file(name).c_str(), 20, 10, 3, px.data(), 20 * 3));
  }
  auto [x, y] = read_image_folder(tmp.path().string(), ImageFolderOptions{3, 8, false});
  ASSERT_EQ(x.sizes(), (std::vector<int64_t>{3, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(y, torch::tensor({0, 0, 1}, torch::kLong)));
  EXPECT_NEAR(x[0][0].mean().item<double>(), 200 / 255.0, 2e-2);
  EXPECT_NEAR(x[0][1].mean().item<double>(), 100 / 255.0, 2e-2);
  EXPECT_NEAR(x[2][0].mean().item<double>(), 50 / 255.0, 2e-2);
  auto [g, gy] = read_image_folder(tmp.path().string(), ImageFolderOptions{1, 5, true});
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{3, 1, 5, 5}));
  EXPECT_GT(g.min().item<double>(), 0.0);  // inverted
  EXPECT_NE(error_of([&] { read_image_folder(tmp.file("none"), {}); }).find("not found"), std::string::npos);
}

TEST(Datasets, RegistryListsNamesForUnknownDataset) {
  auto msg = error_of([] { DatasetRegistry::instance().get("fashion_mnist"); });
  EXPECT_NE(msg.find("'fashion_mnist'"), std::string::npos) << msg;
  // Exactly the registered names, each listed as a whole entry (not found inside "fashion_mnist").
  EXPECT_EQ(pae::testing::listed_names(msg), DatasetRegistry::instance().names()) << msg;
  for (const char* name :
       {"fashion-mnist", "mnist", "cifar10", "image-folder", "npy", "noise", "constant", "constant-gray"}) {
    const auto names = pae::testing::listed_names(msg);
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name << " missing from: " << msg;
  }
}

TEST(Datasets, MissingDatasetListsEveryPathTried) {
  DataOptions o;
  o.name = "cifar10";
  o.root = "/nonexistent/root";
  auto msg = error_of([&] { load_dataset(o, Split::kTest); });
  EXPECT_NE(msg.find("/nonexistent/root"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/usr/share/datasets/cifar10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data/cifar10"), std::string::npos) << msg;
}

TEST(Datasets, IdxFamilySplitsFiltersAndSubsets) {
  TempDir tmp;
  write_fake_mnist(tmp.path() / "mnist", 100, 30);
  DataOptions o;
  o.name = "mnist";
  o.root = (tmp.path() / "mnist").string();
  o.val_size = 20;
  auto train = load_dataset(o, Split::kTrain), val = load_dataset(o, Split::kVal), test = load_dataset(o, Split::kTest);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(val.size(), 20);
  EXPECT_EQ(test.size(), 30);
  EXPECT_EQ(train.images.sizes(), (std::vector<int64_t>{80, 1, 28, 28}));
  EXPECT_GE(train.images.min().item<float>(), 0.0f);
  EXPECT_LE(train.images.max().item<float>(), 1.0f);
  // Train and val are disjoint and together the whole training file.
  auto all = std::get<0>((torch::cat({train.images, val.images}).flatten(1).sum(1).sort()));
  o.val_size = 0;
  auto whole = std::get<0>((load_dataset(o, Split::kTrain).images.flatten(1).sum(1).sort()));
  EXPECT_TRUE(torch::allclose(all, whole));
  // The carve depends on the seed.
  o.val_size = 20;
  o.split_seed = 1;
  EXPECT_FALSE(torch::equal(load_dataset(o, Split::kVal).images, val.images));
  o.split_seed = 0;
  o.classes = {1, 2};
  auto filtered = load_dataset(o, Split::kTest);
  EXPECT_EQ(filtered.size(), 6);
  EXPECT_TRUE(torch::isin(filtered.labels, torch::tensor({1, 2}, torch::kLong)).all().item<bool>());
  o.classes = {};
  o.holdout_classes = {0};
  o.subset = 10;
  auto held = load_dataset(o, Split::kTest);
  EXPECT_EQ(held.size(), 10);
  EXPECT_FALSE(held.labels.eq(0).any().item<bool>());
}

/// An IDX file of big-endian floats (type 0x0D), as other tools write MNIST-like sets.
static void write_float_idx(const std::string& path, const torch::Tensor& t) {
  auto c = t.to(torch::kFloat).contiguous();
  std::string bytes = {0, 0, 0x0D, static_cast<char>(c.dim())};
  for (int64_t i = 0; i < c.dim(); ++i) {
    const auto d = static_cast<uint32_t>(c.size(i));
    bytes += {char(d >> 24), char(d >> 16), char(d >> 8), char(d)};
  }
  const auto* v = c.data_ptr<float>();
  for (int64_t i = 0; i < c.numel(); ++i) {
    uint32_t u;
    std::memcpy(&u, &v[i], 4);
    bytes += {char(u >> 24), char(u >> 16), char(u >> 8), char(u)};
  }
  write_bytes(path, bytes);
}

TEST(Datasets, FloatImagesAreTakenAsTheyAreAndOtherTypesRefused) {
  TempDir tmp;
  write_fake_mnist(tmp.path() / "mnist", 10, 6);
  const auto images = tmp.path() / "mnist" / "t10k-images-idx3-ubyte";
  std::filesystem::remove(images.string() + ".gz");
  DataOptions o;
  o.name = "mnist";
  o.root = (tmp.path() / "mnist").string();
  const auto x = torch::rand({6, 28, 28});
  write_float_idx(images.string(), x);  // already in [0, 1]: not divided by 255 again
  EXPECT_TRUE(torch::equal(load_dataset(o, Split::kTest).images, x.unsqueeze(1)));
  write_float_idx(images.string(), x * 255);
  auto msg = error_of([&] { load_dataset(o, Split::kTest); });
  EXPECT_NE(msg.find(images.string() + ": float images must lie in [0, 1]"), std::string::npos) << msg;
  write_npy(tmp.file("x_test.npy"), torch::randint(0, 2, {6, 8, 8}, torch::kInt));  // 0/1, not 0..255
  o.name = "npy";
  o.path = tmp.file("x_{split}.npy");
  msg = error_of([&] { load_dataset(o, Split::kTest); });
  EXPECT_NE(msg.find("x_test.npy: images of type Int: expected bytes (0..255) or floats in [0, 1]"), std::string::npos)
      << msg;
}

TEST(Datasets, RootsResolveThroughPaeDataDir) {
  TempDir tmp;
  write_fake_mnist(tmp.path() / "mnist", 20, 10);
  const char* old = std::getenv("PAE_DATA_DIR");
  const std::string saved = old ? old : "";
  setenv("PAE_DATA_DIR", tmp.path().c_str(), 1);
  DataOptions o;
  o.name = "mnist";
  EXPECT_EQ(load_dataset(o, Split::kTest).size(), 10);
  if (old)
    setenv("PAE_DATA_DIR", saved.c_str(), 1);
  else
    unsetenv("PAE_DATA_DIR");
}

TEST(Datasets, SyntheticSetsAreSeededAndShaped) {
  DataOptions o;
  o.synthetic_size = 16;
  o.name = "noise";
  auto a = load_dataset(o, Split::kTest), b = load_dataset(o, Split::kTest);
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_FALSE(torch::equal(a.images, load_dataset(o, Split::kTrain).images));
  EXPECT_EQ(a.images.sizes(), (std::vector<int64_t>{16, 1, 28, 28}));
  o.name = "constant";
  o.channels = 3;
  auto c = load_dataset(o, Split::kTest).images;
  EXPECT_TRUE(torch::allclose(c.amax({2, 3}), c.amin({2, 3})));   // constant per channel
  EXPECT_FALSE(torch::allclose(c.select(1, 0), c.select(1, 1)));  // colours differ
  o.name = "constant-gray";
  auto g = load_dataset(o, Split::kTest).images;
  EXPECT_TRUE(torch::allclose(g.select(1, 0), g.select(1, 2)));
}

TEST(Datasets, NpyDatasetWithSplitPlaceholder) {
  TempDir tmp;
  write_npy(tmp.file("x_test.npy"), torch::randint(0, 256, {6, 8, 8}, torch::kLong).to(torch::kUInt8));
  write_npy(tmp.file("y_test.npy"), torch::arange(6));
  write_npy(tmp.file("bad_test.npy"), torch::randn({6, 8, 8}) * 3);
  DataOptions o;
  o.name = "npy";
  o.path = tmp.file("x_{split}.npy");
  o.labels_path = tmp.file("y_{split}.npy");
  auto d = load_dataset(o, Split::kTest);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_TRUE(torch::equal(d.labels, torch::arange(6)));
  o.path = tmp.file("bad_{split}.npy");
  o.labels_path = "";
  EXPECT_NE(error_of([&] { load_dataset(o, Split::kTest); }).find("[0, 1]"), std::string::npos);
}

TEST(Datasets, AugmentationKeepsRangeAndShape) {
  DataOptions o;
  o.dequantize = true;
  o.hflip = true;
  o.shift = 2;
  // Images on the 8-bit grid, as the datasets hold them.
  torch::manual_seed(2);
  auto x = torch::randint(0, 256, {64, 1, 10, 10}).to(torch::kFloat32) / 255;
  auto y = augment(x, o);
  EXPECT_EQ(y.sizes(), x.sizes());
  EXPECT_GE(y.min().item<float>(), 0.0f);
  EXPECT_LE(y.max().item<float>(), 1.0f);
  // Each output is its input flipped or not, shifted by at most 2 pixels (zeros shifted in),
  // dequantized: (255 v + u) / 256 with u in [0, 1), where v is the moved pixel (0 outside).
  int flipped = 0, shifted = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    bool explained = false;
    for (bool flip : {false, true}) {
      auto base = flip ? x[i].flip({2}) : x[i];
      auto padded = torch::constant_pad_nd(base, {2, 2, 2, 2}, 0.0);
      for (int64_t dy = 0; dy <= 4 && !explained; ++dy) {
        for (int64_t dx = 0; dx <= 4 && !explained; ++dx) {
          auto v = padded.slice(1, dy, dy + 10).slice(2, dx, dx + 10);
          auto u = y[i] * 256 - v * 255;
          if ((u > -1e-3).all().item<bool>() && (u < 1 + 1e-3).all().item<bool>()) {
            explained = true;
            flipped += flip;
            shifted += (dy != 2 || dx != 2);
          }
        }
      }
    }
    EXPECT_TRUE(explained) << "image " << i << " is not a flipped/shifted/dequantized copy of its input";
  }
  // Random choices really vary over 64 images (chance of failing: below 1e-15 each).
  EXPECT_GT(flipped, 0);
  EXPECT_LT(flipped, 64);
  EXPECT_GT(shifted, 0);
  // Noise in place of the images is caught.
  auto noise = torch::rand_like(x);
  auto u = noise[0] * 256 - x[0] * 255;
  EXPECT_FALSE((u > -1e-3).all().item<bool>() && (u < 1 + 1e-3).all().item<bool>());
}

TEST(Datasets, MnistTestSetFromPaeDataDir) {
  const char* dir = std::getenv("PAE_DATA_DIR");
  if (dir == nullptr)
    GTEST_SKIP() << "PAE_DATA_DIR is not set (.ci/run and scripts/test.sh set it to the shared MNIST test set)";
  DataOptions o;
  o.name = "mnist";
  auto d = load_dataset(o, Split::kTest);
  EXPECT_EQ(d.images.sizes(), (std::vector<int64_t>{10000, 1, 28, 28}));
  EXPECT_EQ(torch::bincount(d.labels).size(0), 10);
  EXPECT_NEAR(d.images.mean().item<double>(), 0.1325, 2e-3);  // MNIST's known pixel mean
}

TEST(Datasets, TrainFromTestCarvesTrainingFromTheTestSplit) {
  // Only a test set at hand (the shared MNIST): data.train_from test carves train/val from it.
  TempDir tmp;
  const auto test_images = torch::rand({30, 1, 4, 4});
  write_npy(tmp.file("x_test.npy"), test_images);
  DataOptions o;
  o.name = "npy";
  o.path = tmp.file("x_{split}.npy");
  o.val_size = 6;
  EXPECT_NE(error_of([&] { load_dataset(o, Split::kTrain); }).find("x_train.npy"), std::string::npos);
  o.train_from = "test";
  const auto train = load_dataset(o, Split::kTrain), val = load_dataset(o, Split::kVal);
  EXPECT_EQ(train.size(), 24);
  EXPECT_EQ(val.size(), 6);
  // Every training and validation image is one of the test images, none twice.
  const auto all = torch::cat({train.images, val.images}).flatten(1);
  const auto same = (all.unsqueeze(1) == test_images.flatten(1).unsqueeze(0)).all(2);  // [30 carved, 30 test]
  EXPECT_TRUE(same.sum(1).eq(1).all().item<bool>());
  EXPECT_TRUE(same.sum(0).eq(1).all().item<bool>());
  EXPECT_TRUE(torch::equal(load_dataset(o, Split::kTest).images, test_images));
  o.train_from = "val";
  EXPECT_NE(error_of([&] { load_dataset(o, Split::kTrain); }).find("data.train_from"), std::string::npos);
}
