// Every input of the fuzz corpus (tests/fuzz_corpus/<target>/: the seeds, and each input a
// fuzzing run found to crash, once fixed) replayed through its target in the normal build: an
// input may be refused only with a pae::Error naming it.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "pae/util/fs.h"
#include "targets.h"

namespace fs = std::filesystem;

TEST(FuzzCorpus, EveryInputIsReadOrRefusedWithAClearError) {
  const fs::path root = fs::path(PAE_SOURCE_DIR) / "tests" / "fuzz_corpus";
  for (const auto& [name, target] : pae::fuzz::targets()) {
    SCOPED_TRACE(name);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(root / name)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    EXPECT_GE(files.size(), 1u) << "no seed for " << name;
    int accepted = 0;
    for (const auto& f : files) {
      const std::string bytes = pae::read_text(f);
      try {
        pae::fuzz::run(target, bytes);
      } catch (const std::exception& e) {
        ADD_FAILURE() << f << ": " << e.what();
        continue;
      }
      // The seeds are well-formed files: each must be read (a refusal here is a reader bug).
      if (f.filename().string().rfind("crash-", 0) != 0 && f.filename().string().rfind("oom-", 0) != 0) {
        bool refused = false;
        try {
          target(bytes);
        } catch (const std::exception& e) {
          refused = true;
          ADD_FAILURE() << "the well-formed seed " << f << " is refused: " << e.what();
        }
        accepted += !refused;
      }
    }
    EXPECT_GE(accepted, 1) << name;
  }
}
