// User-facing errors: one line naming the file, key or value and what was expected.
#pragma once
#include <functional>
#include <stdexcept>
#include <string>

namespace pae {

/// An error caused by the user's input (config, data file, checkpoint, flag).
/// Programs print its message on one line and exit with kUserErrorExit.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

inline constexpr int kUserErrorExit = 2;

/// The process was asked to stop (a signal) and has saved what a resume needs; programs log the
/// message as a warning and exit with `exit_code`.
class Stopped : public std::runtime_error {
 public:
  Stopped(const std::string& what, int exit_code) : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

/// Throws pae::Error(message) unless cond holds.
inline void require(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

/// Runs a program's body: a pae::Error is logged on one line and gives kUserErrorExit; Stopped
/// is logged as a warning and gives its exit code; a failed allocation (std::bad_alloc, LibTorch's
/// "can't allocate memory" or "out of memory") is out_of_memory_message and kUserErrorExit; any
/// other exception (a LibTorch error included) is logged on one line, without a stack trace,
/// and gives 1.
int run_guarded(const std::function<int()>& body);

/// "out of memory: <what>", with the address-space limit and the process's size when a limit is
/// set, and what to change (run_guarded's message for std::bad_alloc and LibTorch's failed allocations).
std::string out_of_memory_message(const std::string& what);

/// First line of a (possibly multi-line, LibTorch-style) exception message.
std::string first_line(const std::string& message);

}  // namespace pae
