// The library's layers only point down (README, "Architecture"): every #include "pae/..." of a
// file under include/pae or src goes to its own layer or a lower one. Programs sit on top.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

namespace {

namespace fs = std::filesystem;

/// Rank of a path's layer (its first folder under pae/ or src/); config.h is the edge where
/// YAML becomes the options structs of data, models and flows, below the engine. inference/
/// (samplers, posterior search) serves training (the NAE's
/// negative samples) and evaluation alike: generic numerics on energies and functions, below
/// the models that use it.
int rank_of(const std::string& folder) {
  static const std::map<std::string, int> ranks = {{"util", 0},      {"data", 1},    {"nn", 2},     {"models", 3},
                                                   {"flows", 3},     {"report", 4},  {"config", 5}, {"train", 6},
                                                   {"inference", 2}, {"metrics", 7}, {"eval", 8},   {"programs", 9}};
  auto it = ranks.find(folder);
  return it == ranks.end() ? -1 : it->second;
}

/// "pae/train/engine.h" -> "train", "pae/config.h" -> "config".
std::string folder_of(const std::string& include) {
  const auto rest = include.substr(4);
  const auto slash = rest.find('/');
  return slash == std::string::npos ? rest.substr(0, rest.find('.')) : rest.substr(0, slash);
}

}  // namespace

TEST(Layers, IncludesOnlyPointDown) {
  const fs::path root(PAE_SOURCE_DIR);
  const std::regex include_re(R"(#include\s+"(pae/[^"]+)\")");
  int files = 0;
  for (const auto& top : {root / "include" / "pae", root / "src"}) {
    for (const auto& entry : fs::recursive_directory_iterator(top)) {
      if (!entry.is_regular_file()) continue;
      const auto rel = fs::relative(entry.path(), top);
      const std::string folder = rel.has_parent_path() ? rel.begin()->string() : rel.stem().string();
      if (folder == "pch") continue;
      const int own = rank_of(folder);
      ASSERT_GE(own, 0) << entry.path() << ": folder '" << folder << "' has no layer; add it to the README and here";
      ++files;
      std::ifstream in(entry.path());
      for (std::string line; std::getline(in, line);) {
        std::smatch m;
        if (!std::regex_search(line, m, include_re)) continue;
        const auto target = folder_of(m[1]);
        const int theirs = rank_of(target);
        EXPECT_GE(theirs, 0) << entry.path() << " includes " << m[1] << " of an unknown layer";
        EXPECT_LE(theirs, own) << entry.path() << " (" << folder << ") includes " << m[1] << " (" << target
                               << "), a higher layer";
      }
    }
  }
  EXPECT_GT(files, 50);
}
