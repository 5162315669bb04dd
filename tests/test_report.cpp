// The SVG plot module and the HTML run report.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "pae/report/svg.h"

using namespace pae::report;

namespace {
/// The numbers of every attribute `attr` in the SVG, in order.
std::vector<double> attr_values(const std::string& svg, const std::string& cls, const std::string& attr) {
  std::vector<double> out;
  const std::regex re("<[a-z]+ class=\"" + cls + "\"[^>]* " + attr + "=\"([-0-9.]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(std::stod((*it)[1].str()));
  return out;
}
std::vector<std::string> texts(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  const std::regex re("class=\"" + cls + "\"[^>]*>([^<]*)<");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1].str());
  return out;
}
}  // namespace

TEST(Svg, TicksAreNiceAndCoverTheRange) {
  EXPECT_EQ(nice_ticks(0, 1), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  const auto t = nice_ticks(3.7, 48.2);
  EXPECT_EQ(t.front(), 10);
  EXPECT_EQ(t.back(), 40);
  for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(t[i] - t[i - 1], 10, 1e-9);
  const auto small = nice_ticks(-0.003, 0.002);
  EXPECT_NEAR(small[1] - small[0], 0.001, 1e-12);
  EXPECT_EQ(log_ticks(0.003, 20), (std::vector<double>{1e-3, 1e-2, 1e-1, 1, 10, 100}));
  EXPECT_EQ(tick_label(0.2), "0.2");
  EXPECT_EQ(tick_label(1e-5), "1e-05");
  EXPECT_EQ(tick_label(0.00095), "0.00095");
  EXPECT_EQ(tick_label(2000), "2000");
}

TEST(Svg, PointsLandWhereTheAxesSayAndLegendsAreEscaped) {
  PlotOptions o;
  o.width = 520;
  o.height = 300;
  // One line from (0, 0) to (10, 1): the first vertex at the plot's bottom-left corner, the
  // last at its top-right (plot area: x 64..370, y 28..256).
  const auto svg = line_plot({{"a<b", {0, 5, 10}, {0, 0.5, 1}}, {"b", {0, 10}, {1, 0}}}, o);
  const std::regex path_re(
      "class=\"series\"[^>]*d=\"M([-0-9.]+),([-0-9.]+)L([-0-9.]+),([-0-9.]+)L([-0-9.]+),([-0-9.]+)\"");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, path_re)) << svg;
  EXPECT_NEAR(std::stod(m[1]), 64, 0.01);
  EXPECT_NEAR(std::stod(m[2]), 256, 0.01);
  EXPECT_NEAR(std::stod(m[3]), 64 + 306 / 2.0, 0.01);
  EXPECT_NEAR(std::stod(m[4]), 28 + 228 / 2.0, 0.01);
  EXPECT_NEAR(std::stod(m[5]), 370, 0.01);
  EXPECT_NEAR(std::stod(m[6]), 28, 0.01);
  EXPECT_EQ(texts(svg, "legend"), (std::vector<std::string>{"a&lt;b", "b"}));
  EXPECT_EQ(texts(svg, "ytick").front(), "0");
  EXPECT_EQ(texts(svg, "ytick").back(), "1");
  // Grid lines sit at the tick values' positions.
  const auto grid = attr_values(svg, "grid", "y1");
  ASSERT_EQ(grid.size(), 6u);
  for (size_t i = 0; i < grid.size(); ++i) EXPECT_NEAR(grid[i], 256 - 228 * 0.2 * double(i), 0.01);
}

TEST(Svg, LogScaleGapsAndSteps) {
  PlotOptions o;
  o.log_y = true;
  // 1e-3 .. 1e1 on a log axis: 1e-1 sits exactly in the middle of the decades.
  const double nan = std::nan("");
  const auto svg = line_plot({{"loss", {1, 2, 3, 4, 5}, {1e-3, 1e-1, nan, 10, 1}}}, o);
  EXPECT_NE(svg.find("(log)"), std::string::npos);
  const std::regex path_re("d=\"M[-0-9.]+,([-0-9.]+)L[-0-9.]+,([-0-9.]+)M");  // the NaN lifts the pen
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, path_re)) << svg;
  EXPECT_NEAR(std::stod(m[1]), 256, 0.01);
  EXPECT_NEAR(std::stod(m[2]), 28 + 228 / 2.0, 0.01);
  EXPECT_EQ(texts(svg, "ytick"), (std::vector<std::string>{"0.001", "0.01", "0.1", "1", "10"}));
  // A non-positive value turns log scale off rather than dropping data.
  EXPECT_EQ(line_plot({{"s", {0, 1}, {-1, 1}}}, o).find("(log)"), std::string::npos);
  // Steps: each new x first moves horizontally at the previous y.
  const auto steps = line_plot({{"h", {0, 1, 2}, {0, 1, 0}, true}}, PlotOptions{});
  EXPECT_TRUE(std::regex_search(steps, std::regex("d=\"M64.00,256.00L217.00,256.00L217.00,28.00"))) << steps;
}
