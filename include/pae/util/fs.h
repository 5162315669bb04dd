// Filesystem helpers: atomic writes (temp file + rename) and run directories.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace pae {

namespace fs = std::filesystem;

/// Writes `content` to `path` atomically: a temp file in the same folder, then rename.
void atomic_write_text(const fs::path& path, const std::string& content);

/// Calls write(tmp) to produce the file under a temporary name, flushes it to the disk, renames
/// it to `path` and flushes the folder: after a crash or power loss `path` holds the old file or
/// the new one, whole. The temporary is removed if write throws; one orphaned by a kill is named
/// ".<name>.tmp<pid>_<n>" (is_temp_file_name), for the next writer of the folder to remove.
void atomic_write(const fs::path& path, const std::function<void(const fs::path&)>& write);

/// Whether `name` is an atomic_write temporary (".<name>.tmp...").
bool is_temp_file_name(const std::string& name);

/// Appends one line (a JSON object, typically) to `path`, flushing it.
void append_line(const fs::path& path, const std::string& line);

/// Appends bytes as they are to `path`, flushing them.
void append_bytes(const fs::path& path, const std::string& bytes);

/// Creates `dir` (and parents); a clear error when that is impossible.
void ensure_dir(const fs::path& dir);

/// Reads a whole file; a clear error naming the file when it cannot be read or is larger than
/// memory_limit().
std::string read_text(const fs::path& path);

/// The most bytes one reader may allocate: PAE_MEMORY_LIMIT (bytes, or with a K/M/G/T suffix),
/// by default half the machine's memory. Readers check what a header claims against it before
/// allocating, so a corrupt or hostile header gives an error instead of an allocation failure.
uint64_t memory_limit();

/// Throws pae::Error naming `what` unless `bytes` fits memory_limit().
void require_memory(uint64_t bytes, const std::string& what);

/// a * b, or an error naming `what` when the product overflows 2^62.
uint64_t checked_product(uint64_t a, uint64_t b, const std::string& what);

/// An exclusive hold on a folder, through flock(2) on a lock file in it (which records the
/// holder's pid), released when this object goes or the process dies. A second holder is refused
/// with an Error naming the folder (as `what`, e.g. "run directory"), the holding process and `advice`.
class FolderLock {
 public:
  FolderLock(const fs::path& dir, const std::string& file_name, const std::string& what, const std::string& advice);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

  /// Whether some process holds `dir`/`file_name` now.
  static bool held(const fs::path& dir, const std::string& file_name);

 private:
  int fd_ = -1;
};

}  // namespace pae
