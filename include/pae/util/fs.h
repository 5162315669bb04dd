// Filesystem helpers: atomic writes (temp file + rename) and run directories.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

namespace pae {

namespace fs = std::filesystem;

/// Writes `content` to `path` atomically: a temp file in the same folder, then rename.
void atomic_write_text(const fs::path& path, const std::string& content);

/// Calls write(tmp) to produce the file under a temporary name, then renames it to `path`.
/// The temporary is removed if write throws, so no half-written file is ever left at `path`.
void atomic_write(const fs::path& path, const std::function<void(const fs::path&)>& write);

/// Appends one line (a JSON object, typically) to `path`, flushing it.
void append_line(const fs::path& path, const std::string& line);

/// Creates `dir` (and parents); a clear error when that is impossible.
void ensure_dir(const fs::path& dir);

/// Reads a whole file; a clear error naming the file when it cannot be read.
std::string read_text(const fs::path& path);

}  // namespace pae
