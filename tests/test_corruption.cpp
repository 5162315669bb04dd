// Corruptions for inpainting and denoising: each touches exactly the pixels it claims, is
// reproducible from its seed, and bad specs are clear errors.
#include <gtest/gtest.h>
#include <stb_image_write.h>
#include <torch/torch.h>

#include "pae/data/corruption.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;

namespace {

/// Missing-pixel map [H,W] (true = missing) of spec on a 2-channel 6x8 batch, checking that
/// observed pixels are unchanged, missing ones zero, and both channels agree.
at::Tensor missing_of(const std::string& spec, uint64_t seed = 1) {
  torch::manual_seed(0);
  const auto x = torch::rand({3, 2, 6, 8}) * 0.9 + 0.05;
  const auto c = data::parse_corruption(spec, {2, 6, 8});
  const auto r = data::corrupt(c, x, seed);
  EXPECT_TRUE(torch::equal(r.x.masked_select(r.observed), x.masked_select(r.observed))) << spec;
  EXPECT_TRUE(torch::all(r.x.masked_select(r.observed.logical_not()) == 0).item<bool>()) << spec;
  EXPECT_TRUE(torch::equal(r.observed.select(1, 0), r.observed.select(1, 1))) << spec;
  return r.observed.select(1, 0).logical_not();
}

}  // namespace

TEST(Corruption, SolidMasksTouchExactlyTheirPixels) {
  const auto cols = torch::arange(8).view({1, 1, 8}).expand({3, 6, 8});
  const auto rows = torch::arange(6).view({1, 6, 1}).expand({3, 6, 8});
  EXPECT_TRUE(torch::equal(missing_of("left"), cols < 4));
  EXPECT_TRUE(torch::equal(missing_of("right"), cols >= 4));
  EXPECT_TRUE(torch::equal(missing_of("top"), rows < 3));
  EXPECT_TRUE(torch::equal(missing_of("bottom"), rows >= 3));
  EXPECT_TRUE(torch::equal(missing_of("columns:2-5"), (cols >= 2).logical_and(cols <= 5)));
  // A 2x2 centre square of the 6x8 image: rows 2-3, columns 3-4.
  const auto centre = (rows >= 2).logical_and(rows <= 3).logical_and(cols >= 3).logical_and(cols <= 4);
  EXPECT_TRUE(torch::equal(missing_of("center:2"), centre));
}

TEST(Corruption, RandomPixelsAreSeededAndNearTheirFraction) {
  const auto a = missing_of("random:0.3", 5), b = missing_of("random:0.3", 5), c = missing_of("random:0.3", 6);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  EXPECT_FALSE(torch::equal(a[0], a[1]));  // each image its own mask
  const auto big = data::corrupt(data::parse_corruption("random:0.3", {1, 100, 100}), torch::rand({4, 1, 100, 100}), 1);
  const double frac = big.observed.logical_not().to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(frac, 0.3, 0.01);  // 40,000 Bernoulli(0.3): sd 0.0023
}

TEST(Corruption, UserPngMaskWhiteIsMissing) {
  pae::testing::TempDir tmp;
  std::vector<unsigned char> px(6 * 8, 0);
  px[1 * 8 + 2] = 255;  // row 1, column 2
  px[5 * 8 + 7] = 200;
  px[0] = 100;  // dark grey: observed
  ASSERT_NE(stbi_write_png(tmp.file("mask.png").c_str(), 8, 6, 1, px.data(), 8), 0);
  const auto m = missing_of("png:" + tmp.file("mask.png"));
  EXPECT_EQ(m.sum().item<int64_t>(), 3 * 2);
  EXPECT_TRUE(m[0][1][2].item<bool>());
  EXPECT_TRUE(m[2][5][7].item<bool>());
  EXPECT_FALSE(m[0][0][0].item<bool>());
  EXPECT_NE(error_of([&] {
              data::parse_corruption("png:" + tmp.file("mask.png"), {1, 28, 28});
            }).find("28x28"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              data::parse_corruption("png:" + tmp.file("none.png"), {1, 6, 8});
            }).find("none.png"),
            std::string::npos);
}

TEST(Corruption, NoiseHasItsSigmaAndIsClippedUnlessAsked) {
  torch::manual_seed(0);
  const auto x = torch::full({8, 1, 50, 50}, 0.5);
  const auto raw = data::corrupt(data::parse_corruption("noise:0.1:noclip", {1, 50, 50}), x, 3);
  EXPECT_TRUE(torch::all(raw.observed).item<bool>());
  const auto d = (raw.x - x).to(torch::kDouble);
  EXPECT_NEAR(d.mean().item<double>(), 0.0, 0.003);  // 20,000 draws: sd of the mean 0.0007
  EXPECT_NEAR(d.std().item<double>(), 0.1, 0.003);
  const auto clipped = data::corrupt(data::parse_corruption("noise:0.5", {1, 50, 50}), x, 3);
  EXPECT_GE(clipped.x.min().item<float>(), 0.0f);
  EXPECT_LE(clipped.x.max().item<float>(), 1.0f);
  EXPECT_GT((clipped.x == 0).sum().item<int64_t>(), 0);  // sigma 0.5 from 0.5: about 16% clipped at 0
  EXPECT_TRUE(torch::equal(data::corrupt(data::parse_corruption("noise:0.5", {1, 50, 50}), x, 3).x, clipped.x));
}

TEST(Corruption, BadSpecsNameWhatWasExpected) {
  const std::vector<int64_t> s = {1, 28, 28};
  EXPECT_NE(error_of([&] { data::parse_corruption("diagonal", s); }).find("left, right"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("columns:5", s); }).find("columns:A-B"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("columns:3-30", s); }).find("< 28"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("random:1.5", s); }).find("(0, 1)"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("noise:abc", s); }).find("'abc' is not a number"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("noise:0.1:blur", s); }).find("noclip"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("left:3", s); }).find("expected one of"), std::string::npos);
  EXPECT_NE(error_of([&] { data::parse_corruption("center:40", s); }).find("1..28"), std::string::npos);
}
