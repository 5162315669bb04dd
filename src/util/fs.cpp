#include "pae/util/fs.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include "pae/util/error.h"

namespace pae {

namespace {
fs::path temp_sibling(const fs::path& path) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return path.parent_path() /
         ("." + path.filename().string() + ".tmp" + std::to_string(::getpid()) + "_" + std::to_string(rng() % 1000000));
}

/// Flushes a file (or directory) to the disk; errors name it.
void sync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  require(fd >= 0, "cannot open " + path.string() + " to flush it: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  require(rc == 0 || err == EINVAL, "cannot flush " + path.string() + " to the disk: " + std::strerror(err));
}

}  // namespace

bool is_temp_file_name(const std::string& name) {
  return name.size() > 1 && name[0] == '.' && name.find(".tmp") != std::string::npos;
}

void atomic_write(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  if (!path.parent_path().empty()) ensure_dir(path.parent_path());
  const fs::path tmp = temp_sibling(path);
  try {
    write(tmp);
    sync_path(tmp);  // the data reaches the disk before the name points at it
    fs::rename(tmp, path);
    sync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path());  // and the rename
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void atomic_write_text(const fs::path& path, const std::string& content) {
  atomic_write(path, [&](const fs::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    require(static_cast<bool>(out), "cannot write " + tmp.string() + ": " + std::strerror(errno));
    out << content;
    out.close();
    require(!out.fail(), "cannot write " + path.string() +
                             " (disk full, or over a file-size limit?): " + std::strerror(errno ? errno : EIO));
  });
}

void append_line(const fs::path& path, const std::string& line) {
  std::ofstream out(path, std::ios::app);
  require(static_cast<bool>(out), "cannot append to " + path.string() + ": " + std::strerror(errno));
  out << line << '\n';
  out.flush();
  require(static_cast<bool>(out), "cannot append to " + path.string() + " (disk full, or over a file-size limit?): " +
                                      std::strerror(errno ? errno : EIO));
}

void append_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::app | std::ios::binary);
  require(static_cast<bool>(out), "cannot append to " + path.string() + ": " + std::strerror(errno));
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.flush();
  require(static_cast<bool>(out), "cannot append to " + path.string() + " (disk full, or over a file-size limit?): " +
                                      std::strerror(errno ? errno : EIO));
}

void ensure_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw Error("cannot create directory " + dir.string() + ": " +
                (ec ? ec.message() : std::string("a file of that name exists")));
  }
  if (::access(dir.c_str(), W_OK) != 0) {
    throw Error("directory " + dir.string() + " is not writable: " + std::strerror(errno));
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), "cannot read " + path.string() + ": " + std::strerror(errno));
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec) require_memory(size, path.string());
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint64_t memory_limit() {
  static const uint64_t limit = [] {
    const char* env = std::getenv("PAE_MEMORY_LIMIT");
    if (env == nullptr || *env == '\0') {
      const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
      return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) / 2 : uint64_t(1) << 33;
    }
    char* end = nullptr;
    errno = 0;
    const double value = std::strtod(env, &end);
    const std::string suffix = end;
    const double scale = suffix.empty() || suffix == "B" ? 1.0
                         : suffix == "K"                 ? 1024.0
                         : suffix == "M"                 ? 1024.0 * 1024
                         : suffix == "G"                 ? 1024.0 * 1024 * 1024
                         : suffix == "T"                 ? 1024.0 * 1024 * 1024 * 1024
                                                         : -1.0;
    require(end != env && errno == 0 && scale > 0 && value > 0 && value * scale < 9.2e18,
            std::string("PAE_MEMORY_LIMIT='") + env +
                "': expected a positive number of bytes, optionally with K, M, G or T");
    return uint64_t(value * scale);
  }();
  return limit;
}

namespace {
std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n >= (uint64_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", double(n) / double(uint64_t(1) << 30));
  else if (n >= (uint64_t(1) << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(n) / double(1 << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(n) / 1024.0);
  return buf;
}
}  // namespace

void require_memory(uint64_t bytes, const std::string& what) {
  const uint64_t limit = memory_limit();
  require(bytes <= limit, what + " needs " + std::to_string(bytes) + " bytes (" + human_bytes(bytes) +
                              "), over the memory limit of " + human_bytes(limit) +
                              " (PAE_MEMORY_LIMIT; raise it if the data really is that large)");
}

uint64_t checked_product(uint64_t a, uint64_t b, const std::string& what) {
  require(a == 0 || b <= (uint64_t(1) << 62) / a, what + ": sizes overflow (a corrupt header?)");
  return a * b;
}

FolderLock::FolderLock(const fs::path& dir, const std::string& file_name, const std::string& what,
                       const std::string& advice) {
  const auto path = (dir / file_name).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  require(fd_ >= 0, "cannot create the lock file " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    const auto got = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    std::string pid(buf, got > 0 ? size_t(got) : 0);
    while (!pid.empty() && std::isspace(static_cast<unsigned char>(pid.back()))) pid.pop_back();
    throw Error(what + " " + dir.string() + " is in use by process " + (pid.empty() ? "?" : pid) + " (lock " + path +
                "); " + advice);
  }
  const auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0)
    spdlog::warn("could not write the pid into {}", path);
}

FolderLock::~FolderLock() { ::close(fd_); }  // releases the flock

bool FolderLock::held(const fs::path& dir, const std::string& file_name) {
  const int fd = ::open((dir / file_name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_SH | LOCK_NB) != 0;
  ::close(fd);
  return held;
}

}  // namespace pae
