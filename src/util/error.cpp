#include "pae/util/error.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include "pae/util/runtime.h"

namespace pae {

std::string first_line(const std::string& message) {
  const auto end = message.find('\n');
  return end == std::string::npos ? message : message.substr(0, end);
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
  } catch (const c10::Error& e) {
    spdlog::error("internal error: {}", first_line(e.what_without_backtrace()));
    return 1;
  } catch (const std::exception& e) {
    spdlog::error("{}", first_line(e.what()));
    return 1;
  }
}

}  // namespace pae
