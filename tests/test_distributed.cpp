// Data-parallel training over c10d's Gloo on the loopback interface, with the ranks as threads of
// this process (each its own member of the process group): the ranks end with the same
// parameters, and with those of one process training on the combined batch.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "pae/flows/latent_flow.h"
#include "pae/models/aae.h"
#include "pae/models/autoencoder.h"
#include "pae/report/sinks.h"
#include "pae/train/distributed.h"
#include "pae/train/engine.h"
#include "test_util.h"

using namespace pae;

namespace {

/// A TCP port free on the loopback interface now (the store binds it right after).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct Trained {
  std::vector<torch::Tensor> params;
  std::vector<report::EpochRecord> records;
};

/// Trains trainables[r] as rank r of trainables.size() ranks (one process, unranked, for one),
/// each on `data`, with `options`; every rank's parameters and metrics records.
std::vector<Trained> train_ranks(const std::vector<nn::Trainable*>& trainables, const train::TrainData& data,
                                 const train::EngineOptions& options) {
  const int world = int(trainables.size());
  std::vector<Trained> out(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  const int port = free_port();
  auto rank_main = [&](int r) {
    try {
      auto o = options;
      if (world > 1) {
        train::LaunchEnv env;
        env.rank = r;
        env.world_size = world;
        env.master_port = port;
        o.ranks = std::make_shared<train::ProcessGroup>(env, "gloo", false, 60);
      }
      auto sink = std::make_shared<report::MemorySink>();
      train::Engine(o, {sink}).fit(*trainables[size_t(r)], data);
      for (const auto& p : trainables[size_t(r)]->module().parameters())
        out[size_t(r)].params.push_back(p.detach().clone());
      out[size_t(r)].records = sink->records;
    } catch (const std::exception& e) {
      errors[size_t(r)] = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(rank_main, r);
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
  return out;
}

/// The ranks hold identical parameters, equal to one process's within `tol`; the metrics too.
void expect_ranks_match_one_process(const std::vector<Trained>& ranks, const Trained& one, double tol,
                                    const std::string& loss) {
  ASSERT_EQ(ranks.size(), 2u);
  ASSERT_EQ(ranks[0].params.size(), one.params.size());
  for (size_t i = 0; i < one.params.size(); ++i) {
    EXPECT_TRUE(torch::equal(ranks[0].params[i], ranks[1].params[i])) << "parameter " << i << " differs between ranks";
    EXPECT_TRUE(torch::allclose(ranks[0].params[i], one.params[i], tol, tol))
        << "parameter " << i << ": max |2 ranks - 1 process| "
        << (ranks[0].params[i] - one.params[i]).abs().max().item<double>();
  }
  ASSERT_EQ(ranks[0].records.size(), one.records.size());
  for (size_t e = 0; e < one.records.size(); ++e) {
    EXPECT_FALSE(std::isnan(one.records[e].get("train_" + loss))) << "train_" << loss;
    for (const auto& [key, value] : one.records[e].values) {
      if (key == "seconds" || key.find("_per_s") != std::string::npos) continue;
      EXPECT_NEAR(ranks[0].records[e].get(key), value, tol * (1 + std::abs(value))) << key << " of epoch " << e + 1;
    }
  }
}

train::EngineOptions options(int64_t epochs, int64_t batch) {
  train::EngineOptions o;
  o.epochs = epochs;
  o.batch_size = batch;
  o.seed = 5;
  o.quiet = true;
  train::OptimizerOptions adam;
  adam.lr = 1e-2;
  o.optimizers[""] = adam;
  return o;
}

}  // namespace

TEST(Distributed, TwoRanksTakeTheStepsOfOneProcessWithTheCombinedBatch) {
  // MLP auto-encoders (3 epochs of 4 batches of 16: 8 per rank, the last batch 7 + 8): the AE,
  // the VAE (a posterior sample per image) and the mixture-prior AAE (prior draws, three
  // optimizers); and a RealNVP flow (float64) on latents with latent noise. Every sample's noise
  // is the same on whichever rank holds it (nn::SampleNoiseScope). Tolerance: float32 sums in
  // another order, through Adam.
  torch::manual_seed(0);
  const auto images = torch::rand({60, 1, 6, 6});
  const auto latents = torch::randn({90, 3}, torch::kFloat64).matmul(torch::randn({3, 3}, torch::kFloat64));
  for (const std::string family : {"ae", "vae", "aae", "flow"}) {
    SCOPED_TRACE(family);
    std::vector<std::shared_ptr<nn::Trainable>> models;
    for (int k = 0; k < 3; ++k) {  // one process, rank 0, rank 1: the same initial weights
      torch::manual_seed(1);
      if (family != "flow") {
        ModelOptions m;
        m.type = family;
        m.arch = "mlp";
        m.hidden = {24};
        m.latent_dim = 3;
        m.recon_loss = "bce";
        if (family == "aae") {
          m.family<models::AaeOptions>().prior = "mixture";
          m.family<models::AaeOptions>().prior_components = 4;
        }
        models.push_back(models::build_autoencoder(m, {1, 6, 6}));
      } else {
        flows::FlowOptions f;
        f.type = "realnvp";
        f.layers = 3;
        f.hidden = 16;
        auto flow = std::make_shared<flows::LatentFlow>(3, f);
        flow->to(torch::kFloat64);
        flow->fit_standardisation(latents);
        flow->set_training_noise(0.1);
        models.push_back(flow);
      }
    }
    const auto x = family == "flow" ? latents : images;
    train::TrainData data;
    data.size = x.size(0) - 15;
    data.batch = [&](const at::Tensor& idx) { return nn::Batch{x.index_select(0, idx), {}}; };
    data.validation = {x.slice(0, x.size(0) - 15), {}};
    const auto o = options(3, 16);
    const auto one = train_ranks({models[0].get()}, data, o);
    const auto two = train_ranks({models[1].get(), models[2].get()}, data, o);
    const std::map<std::string, std::string> monitored = {
        {"ae", "loss"}, {"vae", "loss"}, {"aae", "gen_loss"}, {"flow", "nll"}};
    expect_ranks_match_one_process(two, one[0], family == "flow" ? 1e-9 : 1e-5, monitored.at(family));
  }
}

TEST(Distributed, BatchNormStatisticsAreAveragedOverTheRanksAtEachEpochEnd) {
  // A conv AE with batch norm: each rank normalises its part of the batch with its own statistics
  // (so the weights differ from one process's), and the running statistics are averaged over the
  // ranks at each epoch's end: both ranks end with the same weights and buffers.
  torch::manual_seed(0);
  const auto x = torch::rand({40, 1, 8, 8});
  ModelOptions m;
  m.arch = "conv";
  m.channels = {4, 8};
  m.latent_dim = 3;
  m.batch_norm = true;
  std::vector<std::shared_ptr<models::AutoEncoder>> ranks;
  for (int k = 0; k < 2; ++k) {
    torch::manual_seed(1);
    ranks.push_back(models::build_autoencoder(m, {1, 8, 8}));
  }
  ASSERT_FALSE(ranks[0]->buffers().empty());
  train::TrainData data;
  data.size = 32;
  data.batch = [&](const at::Tensor& idx) { return nn::Batch{x.index_select(0, idx), {}}; };
  data.validation = {x.slice(0, 32), {}};
  train_ranks({ranks[0].get(), ranks[1].get()}, data, options(2, 16));
  const auto a = ranks[0]->buffers(), b = ranks[1]->buffers();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "buffer " << i;
  const auto pa = ranks[0]->parameters(), pb = ranks[1]->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << "parameter " << i;
}

namespace {

/// A linear fit whose loss is NaN at one step on one rank only.
struct NanOnOneRank : torch::nn::Module, nn::Trainable {
  explicit NanOnOneRank(bool bad) : bad_rank(bad) { w = register_parameter("w", torch::ones({3, 1})); }
  torch::nn::Module& module() override { return *this; }
  std::vector<std::pair<std::string, std::vector<torch::Tensor>>> parameter_groups() override { return {{"fit", {w}}}; }
  void train_step(const nn::Batch& batch, nn::StepContext& ctx) override {
    auto loss = (batch.x.matmul(w) - 1).pow(2).mean();
    if (bad_rank && ctx.global_step() == 2) loss = loss * std::numeric_limits<float>::quiet_NaN();
    ctx.step("fit", loss);
    ctx.log("loss", loss);
  }
  std::string signature() const override { return "nan-on-one-rank"; }
  torch::Tensor w;
  bool bad_rank;
};

}  // namespace

TEST(Distributed, ANonFiniteLossOnOneRankIsSkippedOnEveryRank) {
  // train.nonfinite: skip. Rank 1's loss is NaN at step 3: both ranks skip that step (the flag
  // travels with the gradients), count it, and stay identical.
  torch::manual_seed(0);
  const auto x = torch::randn({32, 3});
  NanOnOneRank r0(false), r1(true);
  train::TrainData data;
  data.size = 32;
  data.batch = [&](const at::Tensor& idx) { return nn::Batch{x.index_select(0, idx), {}}; };
  auto o = options(2, 8);
  o.nonfinite = "skip";
  const auto ranks = train_ranks({&r0, &r1}, data, o);
  ASSERT_EQ(ranks.size(), 2u);
  EXPECT_TRUE(torch::equal(ranks[0].params[0], ranks[1].params[0]));
  ASSERT_EQ(ranks[0].records.size(), 2u);
  EXPECT_EQ(ranks[0].records[0].get("nonfinite_steps"), 1.0);
  EXPECT_EQ(ranks[1].records[0].get("nonfinite_steps"), 1.0);
  EXPECT_EQ(ranks[0].records[1].get("nonfinite_steps"), 0.0);
  EXPECT_TRUE(std::isfinite(ranks[0].records[0].get("train_loss")));
}

TEST(Distributed, TorchrunsEnvironmentIsReadOrRefusedWithTheVariableNamed) {
  const auto with = [](std::map<std::string, std::string> vars) {
    for (const char* v :
         {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"})
      ::unsetenv(v);
    for (const auto& [k, v] : vars) ::setenv(k.c_str(), v.c_str(), 1);
    return pae::testing::error_of([] { train::read_launch_env(); });
  };
  EXPECT_EQ(with({}), "");
  EXPECT_FALSE(train::read_launch_env().distributed());
  EXPECT_EQ(with({{"WORLD_SIZE", "1"}, {"RANK", "0"}}), "");
  const std::map<std::string, std::string> good = {{"WORLD_SIZE", "2"},
                                                   {"RANK", "1"},
                                                   {"LOCAL_RANK", "1"},
                                                   {"LOCAL_WORLD_SIZE", "2"},
                                                   {"MASTER_ADDR", "127.0.0.1"},
                                                   {"MASTER_PORT", "29400"},
                                                   {"TORCHELASTIC_RUN_ID", "job7"}};
  EXPECT_EQ(with(good), "");
  const auto env = train::read_launch_env();
  EXPECT_TRUE(env.distributed());
  EXPECT_EQ(env.rank, 1);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.master_port, 29400);
  EXPECT_EQ(env.run_id, "job7");
  EXPECT_NE(with({{"RANK", "1"}}).find("RANK=1 without WORLD_SIZE"), std::string::npos);
  auto bad = good;
  bad.erase("RANK");
  EXPECT_NE(with(bad).find("WORLD_SIZE=2 without RANK"), std::string::npos);
  bad = good;
  bad["RANK"] = "2";
  EXPECT_NE(with(bad).find("RANK='2': expected an integer in [0, 1]"), std::string::npos);
  bad = good;
  bad["MASTER_PORT"] = "http";
  EXPECT_NE(with(bad).find("MASTER_PORT='http'"), std::string::npos);
  bad = good;
  bad.erase("MASTER_ADDR");
  EXPECT_NE(with(bad).find("MASTER_ADDR is not set"), std::string::npos);
  with({});
}
