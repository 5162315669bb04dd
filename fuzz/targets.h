// What each fuzz target does with one input, shared by the libFuzzer executables (fuzz_*.cpp)
// and the corpus replay test of the normal build (tests/test_fuzz_corpus.cpp). A target may refuse
// its input only with pae::Error naming the source "fuzz-input"; anything else it throws (a
// LibTorch or std:: error reaching the user without naming the file, or std::logic_error for a
// broken invariant), a crash or a sanitizer report is a finding.
#pragma once
#include <functional>
#include <map>
#include <string>

namespace pae::fuzz {

void idx(const std::string& bytes);         ///< gunzip_if_needed, parse_idx, else parse_cifar_batch
void npy(const std::string& bytes);         ///< parse_npy
void image(const std::string& bytes);       ///< decode_image; the first byte picks channels, inversion, size
void config(const std::string& bytes);      ///< parse_config, the written-back config read again
void checkpoint(const std::string& bytes);  ///< load_checkpoint_bytes into a small AE + Adam

/// The targets by name (the folder names of tests/fuzz_corpus/).
const std::map<std::string, std::function<void(const std::string&)>>& targets();

/// Runs `target` on `bytes`: returns normally, or throws what is not a clean refusal (a pae::Error
/// whose message does not name "fuzz-input" becomes a std::logic_error).
void run(const std::function<void(const std::string&)>& target, const std::string& bytes);

}  // namespace pae::fuzz
