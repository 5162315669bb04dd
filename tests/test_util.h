// Shared test helpers: a temporary directory removed at the end of each test.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

namespace pae::testing {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("pae_test_" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// Runs `fn` and returns the message of the pae::Error it throws ("" if none).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const pae::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace pae::testing
