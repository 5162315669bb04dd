#include "pae/train/distributed.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <map>

// c10d's Gloo process group, where this LibTorch has it and its headers (and Gloo's) are here; a
// LibTorch without them builds pae all the same, and a distributed launch is then one error.
#if defined(USE_C10D_GLOO) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>) && \
    __has_include(<gloo/config.h>)
#define PAE_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include "pae/util/error.h"

namespace pae::train {

namespace {

std::string env_of(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

int int_env(const char* name, int lo, int hi) {
  const std::string v = env_of(name);
  try {
    size_t used = 0;
    const long x = std::stol(v, &used);
    if (used == v.size() && x >= lo && x <= hi) return int(x);
  } catch (const std::exception&) {
  }
  throw Error(std::string(name) + "='" + v + "': expected an integer in [" + std::to_string(lo) + ", " +
              std::to_string(hi) + "] (torchrun sets it for each worker)");
}

/// The tensors grouped by dtype and device, each group in the order given (one collective each).
std::vector<std::vector<at::Tensor>> buckets(const std::vector<at::Tensor>& tensors) {
  std::map<std::pair<int, std::string>, std::vector<at::Tensor>> by_kind;
  for (const auto& t : tensors) by_kind[{int(t.scalar_type()), t.device().str()}].push_back(t);
  std::vector<std::vector<at::Tensor>> out;
  for (auto& [kind, group] : by_kind) out.push_back(std::move(group));
  return out;
}

at::Tensor flat(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> parts;
  for (const auto& t : tensors) parts.push_back(t.detach().reshape(-1));
  return torch::cat(parts);
}

void unflat(const at::Tensor& buffer, const std::vector<at::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t at = 0;
  for (const auto& t : tensors) {
    t.copy_(buffer.narrow(0, at, t.numel()).view_as(t));
    at += t.numel();
  }
}

}  // namespace

LaunchEnv read_launch_env() {
  LaunchEnv e;
  const std::string world = env_of("WORLD_SIZE"), rank = env_of("RANK");
  if (world.empty()) {
    require(
        rank.empty() || rank == "0",
        "RANK=" + rank +
            " without WORLD_SIZE: this process would train on every sample alone. Launch the ranks with torchrun "
            "(or scripts/launch.sh), which sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or unset "
            "RANK");
    return e;
  }
  e.world_size = int_env("WORLD_SIZE", 1, 1 << 20);
  if (e.world_size == 1) return e;
  require(!rank.empty(), "WORLD_SIZE=" + world +
                             " without RANK: each worker needs its RANK (torchrun sets RANK, LOCAL_RANK, MASTER_ADDR "
                             "and MASTER_PORT for each)");
  e.rank = int_env("RANK", 0, e.world_size - 1);
  if (!env_of("LOCAL_WORLD_SIZE").empty()) e.local_world_size = int_env("LOCAL_WORLD_SIZE", 1, e.world_size);
  if (!env_of("LOCAL_RANK").empty()) e.local_rank = int_env("LOCAL_RANK", 0, e.local_world_size - 1);
  require(!env_of("MASTER_ADDR").empty(),
          "WORLD_SIZE=" + world + ": MASTER_ADDR is not set (the address of rank 0, which serves the store)");
  e.master_addr = env_of("MASTER_ADDR");
  require(!env_of("MASTER_PORT").empty(), "WORLD_SIZE=" + world + ": MASTER_PORT is not set (the store's port)");
  e.master_port = int_env("MASTER_PORT", 1, 65535);
  e.run_id = env_of("TORCHELASTIC_RUN_ID");
  return e;
}

#ifdef PAE_HAVE_GLOO

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  std::chrono::milliseconds timeout{0};
};

ProcessGroup::ProcessGroup(const LaunchEnv& env, const std::string& backend, bool cuda, double timeout_s)
    : impl_(std::make_unique<Impl>()), rank_(env.rank), size_(env.world_size) {
  require(backend == "auto" || backend == "gloo" || backend == "nccl",
          "distributed backend '" + backend + "': expected auto, gloo or nccl");
  require(backend != "nccl" || cuda,
          "distributed backend nccl needs the device to be CUDA (train.device: cuda); on the CPU use gloo or auto");
  require(backend != "nccl", "distributed backend nccl: this build of pae has Gloo only (it reduces CUDA tensors too)");
  backend_ = "gloo";
  impl_->timeout = std::chrono::milliseconds(int64_t(timeout_s * 1000));
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = uint16_t(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = size_t(env.world_size);
    so.timeout = impl_->timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    auto options = c10d::ProcessGroupGloo::Options::create(impl_->timeout);
    const std::string ifname = std::getenv("GLOO_SOCKET_IFNAME") ? std::getenv("GLOO_SOCKET_IFNAME") : "";
    const bool loopback = env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0;
    options->devices.push_back(!ifname.empty() ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                               : loopback      ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                               : c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, options);
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                ": cannot join the process group at MASTER_ADDR:MASTER_PORT = " + where + " within " +
                std::to_string(int(timeout_s)) + " s (" + first_line(e.what()) +
                "); is every rank started, and rank 0's address and port right?");
  }
  spdlog::info("rank {} of {} joined the process group at {} ({})", rank_, size_, where, backend_);
}

ProcessGroup::~ProcessGroup() = default;

namespace {

template <class Fn>
void collective(int rank, int size, const std::string& what, Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("rank " + std::to_string(rank) + " of " + std::to_string(size) + ": the " + what +
                " with the other ranks failed (" + first_line(e.what()) +
                "): another rank stopped or died, so this one stops too");
  }
}

}  // namespace

void ProcessGroup::allreduce_sum(const std::vector<at::Tensor>& tensors) {
  for (const auto& bucket : buckets(tensors)) {
    std::vector<at::Tensor> buffer = {flat(bucket)};
    const auto start = std::chrono::steady_clock::now();
    collective(rank_, size_, "gradient or metrics all-reduce",
               [&] { impl_->pg->allreduce(buffer)->wait(impl_->timeout); });
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bytes_ += buffer[0].numel() * int64_t(buffer[0].element_size());
    ++calls_;
    unflat(buffer[0], bucket);
  }
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors) {
  for (const auto& bucket : buckets(tensors)) {
    std::vector<at::Tensor> buffer = {flat(bucket)};
    collective(rank_, size_, "broadcast from rank 0", [&] { impl_->pg->broadcast(buffer)->wait(impl_->timeout); });
    unflat(buffer[0], bucket);
  }
}

void ProcessGroup::barrier() {
  collective(rank_, size_, "barrier", [&] { impl_->pg->barrier()->wait(impl_->timeout); });
}

void ProcessGroup::require_same(const std::string& text, const std::string& what) {
  const auto h = int64_t(std::hash<std::string>{}(text) >> 1);
  std::vector<at::Tensor> t = {torch::tensor({h, -h}, torch::kInt64)};
  c10d::AllreduceOptions max;
  max.reduceOp = c10d::ReduceOp::MAX;
  collective(rank_, size_, "comparison of " + what, [&] { impl_->pg->allreduce(t, max)->wait(impl_->timeout); });
  require(t[0][0].item<int64_t>() == -t[0][1].item<int64_t>(), "rank " + std::to_string(rank_) +
                                                                   ": the ranks were started with different " + what +
                                                                   "; start every rank with the same config and flags");
}

#else  // no Gloo in this LibTorch

struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const LaunchEnv& env, const std::string&, bool, double) {
  throw Error("rank " + std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
              ": this build of pae has no c10d Gloo process group (its LibTorch was built without it, or the Gloo "
              "headers were missing): run one process (unset WORLD_SIZE and RANK)");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::allreduce_sum(const std::vector<at::Tensor>&) {}
void ProcessGroup::broadcast(const std::vector<at::Tensor>&) {}
void ProcessGroup::barrier() {}
void ProcessGroup::require_same(const std::string&, const std::string&) {}

#endif

std::shared_ptr<ProcessGroup> join_launched_ranks(std::string& device, bool& quiet, const std::string& backend,
                                                  double timeout_s) {
  const auto env = read_launch_env();
  if (!env.distributed()) return nullptr;
  if (device == "cuda") device = "cuda:" + std::to_string(env.local_rank);
  auto ranks = std::make_shared<ProcessGroup>(env, backend, device.rfind("cuda", 0) == 0, timeout_s);
  if (env.rank > 0) {
    quiet = true;
    spdlog::set_level(spdlog::level::warn);
  }
  return ranks;
}

}  // namespace pae::train
