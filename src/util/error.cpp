#include "pae/util/error.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <new>

#include "pae/util/runtime.h"

namespace pae {

std::string first_line(const std::string& message) {
  const auto end = message.find('\n');
  return end == std::string::npos ? message : message.substr(0, end);
}

std::string out_of_memory_message(const std::string& what) {
  std::string text = "out of memory";
  const auto detail = what.find_first_not_of(": ");
  if (detail != std::string::npos) text += ": " + what.substr(detail);
  if (const size_t limit = address_space_limit(); limit > 0)
    text += fmt::format(" (the address-space limit is ulimit -v {} KiB; the process mapped {} MiB)", limit / 1024,
                        mapped_bytes() >> 20);
  return text + "; raise the limit, or use a smaller train.batch_size, train.eval_batch_size or data.subset";
}

int run_guarded(const std::function<int()>& body) {
  try {
    const int status = body();
    if (status == 0 && stop_signal() != 0)
      spdlog::warn("{} received while finishing: the run's work is complete", signal_name(stop_signal()));
    return status;
  } catch (const Stopped& e) {
    spdlog::warn("{}", e.what());
    return e.exit_code();
  } catch (const Error& e) {
    spdlog::error("{}", e.what());
    return kUserErrorExit;
  } catch (const std::bad_alloc&) {
    spdlog::error("{}", out_of_memory_message("an allocation failed"));
    return kUserErrorExit;
  } catch (const c10::Error& e) {
    const std::string what = first_line(e.what_without_backtrace());
    for (const char* sign : {"can't allocate memory", "out of memory"})
      if (const auto at = what.find(sign); at != std::string::npos) {
        spdlog::error("{}", out_of_memory_message(what.substr(at + std::strlen(sign))));
        return kUserErrorExit;
      }
    spdlog::error("internal error: {}", what);
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", first_line(e.what()));
    return 1;
  }
}

}  // namespace pae
