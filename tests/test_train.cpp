#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <tuple>

#include "pae/config.h"
#include "pae/data/npy.h"
#include "pae/eval/pae.h"
#include "pae/models/autoencoder.h"
#include "pae/report/tensorboard.h"
#include "pae/train/checkpoint.h"
#include "pae/train/run.h"
#include "pae/train/trainer.h"
#include "pae/util/error.h"
#include "pae/util/fs.h"
#include "pae/util/run_state.h"
#include "pae/util/runtime.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;
using pae::testing::TempDir;

namespace {

Config tiny_config(const TempDir& tmp, int64_t epochs) {
  torch::manual_seed(0);  // the same data in every process: what a test asserts must not depend on the draw
  data::write_npy(tmp.file("x_train.npy"), torch::rand({96, 1, 8, 8}));
  data::write_npy(tmp.file("x_test.npy"), torch::rand({32, 1, 8, 8}));
  Config c = parse_config("", "test");
  c.data.name = "npy";
  c.data.path = tmp.file("x_{split}.npy");
  c.data.val_size = 16;
  c.model.arch = "mlp";
  c.model.hidden = {16};
  c.model.latent_dim = 3;
  c.train.epochs = epochs;
  c.train.batch_size = 20;
  c.train.num_samples = 8;
  c.train.eval_batch_size = 50;
  return c;
}

std::vector<torch::Tensor> params_of(const std::string& checkpoint, const Config& c) {
  auto model = models::build_autoencoder(c.model, {1, 8, 8});
  train::load_checkpoint(checkpoint, *model, {}, "");
  std::vector<torch::Tensor> out;
  for (auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

int count_lines(const std::string& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

}  // namespace

TEST(Train, WritesTheRunDirectory) {
  TempDir tmp;
  Config c = tiny_config(tmp, 2);
  train::RunOptions run{tmp.file("run"), "cpu", false, false, true};
  auto summary = train::train_autoencoder(c, run);
  EXPECT_EQ(summary.epochs_completed, 2);
  EXPECT_TRUE(summary.test_metrics.count("mse"));
  for (const char* f : {"config.yml", "train.log", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt",
                        "recon.png", "samples.png", "summary.json", "model.json", "latents/train.npy",
                        "latents/val.npy", "latents/test.npy", "latents/test_labels.npy"})
    EXPECT_TRUE(std::filesystem::exists(tmp.path() / "run" / f)) << f;
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
  EXPECT_EQ(data::read_npy(tmp.file("run/latents/train.npy")).sizes(), (std::vector<int64_t>{80, 3}));
  EXPECT_EQ(data::read_npy(tmp.file("run/latents/test.npy")).sizes(), (std::vector<int64_t>{32, 3}));
  // The resolved config in the run directory parses back to the same config.
  EXPECT_EQ(to_yaml(load_config(tmp.file("run/config.yml"))), to_yaml(c));
  // An existing run is never overwritten unasked.
  auto msg = error_of([&] { train::train_autoencoder(c, run); });
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
  run.force = true;
  EXPECT_NO_THROW(train::train_autoencoder(c, run));
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
}

TEST(Train, ResumeContinuesWithTheSameOptimizerState) {
  PAE_DEVICE_UNDER_TEST(device);
  TempDir tmp;
  torch::set_num_threads(1);
  Config two = tiny_config(tmp, 2), one = tiny_config(tmp, 1);
  two.model.dropout = one.model.dropout = 0.2;  // draws from the device's generator, restored on resume
  train::train_autoencoder(two, {tmp.file("straight"), device.str(), false, false, true});
  train::train_autoencoder(one, {tmp.file("resumed"), device.str(), false, false, true});
  train::train_autoencoder(two, {tmp.file("resumed"), device.str(), true, false, true});
  EXPECT_EQ(count_lines(tmp.file("resumed/metrics.jsonl")), 2);
  auto a = params_of(tmp.file("straight/checkpoints/last.pt"), two);
  auto b = params_of(tmp.file("resumed/checkpoints/last.pt"), two);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(pae::testing::same_on(device, a[i], b[i])) << "parameter " << i;
}

TEST(Train, CheckpointOfAnotherModelIsAClearError) {
  TempDir tmp;
  Config c = tiny_config(tmp, 1);
  train::train_autoencoder(c, {tmp.file("run"), "cpu", false, false, true});
  Config other = c;
  other.model.latent_dim = 5;
  auto msg = error_of([&] { train::train_autoencoder(other, {tmp.file("run"), "cpu", true, false, true}); });
  EXPECT_NE(msg.find("model.latent_dim: 3 -> 5"), std::string::npos) << msg;  // the resume check, first
  auto z5 = models::build_autoencoder(other.model, {1, 8, 8});
  msg = error_of([&] { train::load_checkpoint(tmp.file("run/checkpoints/last.pt"), *z5, {}, z5->signature()); });
  EXPECT_NE(msg.find("z3"), std::string::npos) << msg;  // the signature check, for any loader
  EXPECT_NE(msg.find("z5"), std::string::npos) << msg;
  std::ofstream(tmp.file("junk.pt")) << "not a checkpoint";
  auto model = models::build_autoencoder(c.model, {1, 8, 8});
  msg = error_of([&] { train::load_checkpoint(tmp.file("junk.pt"), *model, {}, ""); });
  EXPECT_NE(msg.find("junk.pt"), std::string::npos) << msg;
}

namespace {

std::string bytes(const std::string& path) { return read_text(path); }

}  // namespace

TEST(Train, RunResumedAfterEveryEpochEndsLikeAnUninterruptedRun) {
  // 260 epochs: more than a byte can count (the epoch once came back through one byte, and
  // the best validation loss as 0, so a resumed run never wrote best.pt again).
  TempDir tmp;
  torch::set_num_threads(1);
  Config c = tiny_config(tmp, 260);
  c.train.lr = 3e-3;
  const auto straight = train::train_autoencoder(c, {tmp.file("straight"), "cpu", false, false, true});
  ASSERT_GT(straight.model_epoch, 1);
  train::TrainSummary resumed;
  for (int64_t k = 1; k <= 260; ++k) {
    Config ck = c;
    ck.train.epochs = k;
    resumed = train::train_autoencoder(ck, {tmp.file("resumed"), "cpu", k > 1, false, true});
  }
  EXPECT_EQ(resumed.model_epoch, straight.model_epoch);
  EXPECT_EQ(resumed.test_metrics, straight.test_metrics);
  for (const char* f : {"latents/train.npy", "latents/val.npy", "latents/test.npy"})
    EXPECT_TRUE(bytes(tmp.file(std::string("straight/") + f)) == bytes(tmp.file(std::string("resumed/") + f))) << f;
  EXPECT_EQ(count_lines(tmp.file("resumed/metrics.jsonl")), 260);
  EXPECT_EQ(pae::testing::metrics_without_timing(tmp.file("resumed/metrics.jsonl")),
            pae::testing::metrics_without_timing(tmp.file("straight/metrics.jsonl")));
  // Checkpoints: the same weights and the same progress (optimizer state is keyed by tensor
  // addresses in the file, so the bytes differ; the next test compares it by training on).
  for (const char* which : {"best", "last"}) {
    auto a = models::build_autoencoder(c.model, {1, 8, 8}), b = models::build_autoencoder(c.model, {1, 8, 8});
    const auto sa = train::load_weights(tmp.file("straight"), which, *a);
    const auto sb = train::load_weights(tmp.file("resumed"), which, *b);
    EXPECT_EQ(sa.epoch, sb.epoch) << which;
    EXPECT_EQ(sa.best_epoch, sb.best_epoch) << which;
    EXPECT_EQ(sa.best, sb.best) << which;
    EXPECT_EQ(sa.stale, sb.stale) << which;
    EXPECT_EQ(sa.global_step, sb.global_step) << which;
    const auto pa = a->parameters(), pb = b->parameters();
    for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i])) << which << " parameter " << i;
  }
  EXPECT_EQ(train::load_weights(tmp.file("resumed"), "last", *models::build_autoencoder(c.model, {1, 8, 8})).epoch,
            260);
  // Optimizer state and RNG: one more epoch from each last.pt ends in the same place.
  c.train.epochs = 261;
  for (const char* run : {"straight", "resumed"})
    train::train_autoencoder(c, {tmp.file(run), "cpu", true, false, true});
  auto a = params_of(tmp.file("straight/checkpoints/last.pt"), c),
       b = params_of(tmp.file("resumed/checkpoints/last.pt"), c);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::equal(a[i], b[i])) << "after one more epoch, parameter " << i;
}

TEST(Train, LatentsAreTheEncodingsOfTheModelThatEvaluationsLoad) {
  // A run that overfits (best validation epoch before the last): whichever checkpoint is the
  // run's model, the saved latents and test metrics are those of the model load_autoencoder
  // (pae-eval, pae-flow sample) gets.
  PAE_DEVICE_UNDER_TEST(device);
  for (const char* which : {"best", "last"}) {
    SCOPED_TRACE(which);
    TempDir tmp;
    torch::set_num_threads(1);
    Config c = tiny_config(tmp, 40);
    c.train.lr = 1e-2;
    c.train.model_checkpoint = which;
    const auto summary = train::train_autoencoder(c, {tmp.file("run"), device.str(), false, false, true});
    if (std::string(which) == "best") {
      ASSERT_LT(summary.model_epoch, 40) << "the fixture must overfit for this test to mean something";
    } else {
      EXPECT_EQ(summary.model_epoch, 40);
    }
    Config loaded;
    auto model = train::load_autoencoder(tmp.file("run"), &loaded);
    model->to(device);
    torch::NoGradGuard g;
    for (auto split : {data::Split::kTrain, data::Split::kVal, data::Split::kTest}) {
      const auto d = data::load_dataset(loaded.data, split);
      const auto saved = data::read_npy(tmp.file("run/latents/" + data::to_string(split) + ".npy"));
      // Encoded in the run's evaluation batches, so that equal models give equal bits.
      std::vector<torch::Tensor> z;
      for (int64_t i = 0; i < d.size(); i += c.train.eval_batch_size)
        z.push_back(model->encode(d.images.slice(0, i, i + c.train.eval_batch_size).to(device)).cpu());
      EXPECT_TRUE(pae::testing::same_on(device, torch::cat(z), saved)) << data::to_string(split);
    }
    const auto test = data::load_dataset(loaded.data, data::Split::kTest);
    EXPECT_DOUBLE_EQ(model->evaluate(test.images, 50).at("mse"), summary.test_metrics.at("mse"));
  }
}

TEST(Train, GroupsSectionSetsTheGroupsOptimizerAndUnknownGroupsAreErrors) {
  TempDir tmp;
  Config c = tiny_config(tmp, 2);
  c.groups["ae"].lr = 5e-4;
  c.groups["ae"].lr_schedule = "cosine";
  train::train_autoencoder(c, {tmp.file("run"), "cpu", false, false, true});
  const auto lines = read_text(tmp.file("run/metrics.jsonl"));
  EXPECT_NE(lines.find("\"lr\": 0.0005,"), std::string::npos) << lines;   // epoch 1: full rate
  EXPECT_NE(lines.find("\"lr\": 0.00025,"), std::string::npos) << lines;  // epoch 2 of 2: cosine half
  Config bad = tiny_config(tmp, 1);
  bad.groups["disc"].lr = 1e-4;
  const auto msg = error_of([&] { train::train_autoencoder(bad, {tmp.file("bad"), "cpu", false, false, true}); });
  EXPECT_NE(msg.find("groups.disc"), std::string::npos) << msg;
  EXPECT_NE(msg.find("its groups: ae"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(tmp.file("bad"))) << "nothing is written for a config that cannot run";
}

TEST(Train, RunDirectoryIsLockedLoggedAndReleased) {
  pae::testing::TempDir tmp;
  const auto dir = tmp.file("run");
  const auto log = tmp.file("run/train.log");
  {
    const train::RunDirectory held(dir, false, false, "train.log");
    // A second writer (another process, or this one) is refused with the holder's pid.
    const auto msg = pae::testing::error_of([&] { train::RunDirectory again(dir, false, true, "train.log"); });
    EXPECT_NE(msg.find("is in use by process " + std::to_string(::getpid())), std::string::npos) << msg;
    EXPECT_TRUE(fs::exists(log)) << "--force must not have removed the holder's files";
    spdlog::info("line while held");
    // Flushed at once: a SIGKILL now would keep the line.
    EXPECT_NE(read_text(log).find("line while held"), std::string::npos);
  }
  spdlog::info("line after release");
  EXPECT_EQ(read_text(log).find("line after release"), std::string::npos) << "the log sink leaked";
  // Released: the directory can be taken again (--force, since it is not empty now), and the
  // temporaries of writes that a kill interrupted are removed; other files stay.
  fs::create_directories(tmp.file("run/checkpoints"));
  for (const char* f : {"run/checkpoints/.last.pt.tmp123_45", "run/.config.yml.tmp9_1", "run/notes.txt"})
    std::ofstream(tmp.file(f)) << "x";
  EXPECT_NO_THROW(train::RunDirectory(dir, false, true, "train.log"));
  EXPECT_FALSE(fs::exists(tmp.file("run/checkpoints/.last.pt.tmp123_45")));
  EXPECT_FALSE(fs::exists(tmp.file("run/.config.yml.tmp9_1")));
  EXPECT_TRUE(fs::exists(tmp.file("run/notes.txt")));
  const auto msg = pae::testing::error_of([&] { train::RunDirectory(dir, true, true, "train.log"); });
  EXPECT_NE(msg.find("--resume and --force: choose one"), std::string::npos) << msg;
  EXPECT_NE(
      pae::testing::error_of([&] { train::RunDirectory("", false, false, "train.log"); }).find("must not be empty"),
      std::string::npos);
}

TEST(Train, ResumeRefusesWhatDecidesTheRunAndRecordsWhatMayChange) {
  TempDir tmp;
  Config c = tiny_config(tmp, 1);
  const train::RunOptions first{tmp.file("run"), "cpu", false, false, true};
  train::train_autoencoder(c, first);
  EXPECT_EQ(train::read_checkpoint_header(tmp.file("run/checkpoints/last.pt")).config_yaml,
            to_yaml(c));  // stored with the weights
  train::RunOptions resume = first;
  resume.resume = true;
  // Wider layers and another seed: refused, each key named with both values, nothing trained.
  Config wider = c;
  wider.model.hidden = {128};
  wider.train.seed = 5;
  wider.train.epochs = 2;
  const auto msg = error_of([&] { train::train_autoencoder(wider, resume); });
  EXPECT_NE(msg.find("model.hidden: [16] -> [128]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.seed: 0 -> 5"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("train.epochs"), std::string::npos) << "epochs may change: " << msg;
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 1);
  // More epochs at another learning rate: allowed, and config.yml follows the run.
  Config longer = c;
  longer.train.epochs = 2;
  longer.train.lr = 3e-4;
  train::train_autoencoder(longer, resume);
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
  EXPECT_EQ(to_yaml(load_config(tmp.file("run/config.yml"))), to_yaml(longer));
  const auto history = read_text(tmp.file("run/config_history.jsonl"));
  EXPECT_NE(history.find("train.epochs: 1 -> 2"), std::string::npos) << history;
  EXPECT_NE(history.find("train.lr: 0.001 -> 0.0003"), std::string::npos) << history;
  EXPECT_EQ(train::read_checkpoint_header(tmp.file("run/checkpoints/last.pt")).config_yaml, to_yaml(longer));
  // Fewer epochs than the run has completed: an error naming both, and nothing rewritten.
  const auto config_before = read_text(tmp.file("run/config.yml"));
  const auto fewer_msg = error_of([&] { train::train_autoencoder(c, resume); });
  EXPECT_NE(fewer_msg.find("train.epochs 1 is fewer than the 2 epochs the run has completed"), std::string::npos)
      << fewer_msg;
  EXPECT_EQ(read_text(tmp.file("run/config.yml")), config_before);
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
}

TEST(Train, AFullDiskIsAClearErrorAndThePreviousCheckpointStaysResumable) {
  TempDir tmp;
  Config c = tiny_config(tmp, 1);
  train::RunOptions run{tmp.file("run"), "cpu", false, false, true};
  train::train_autoencoder(c, run);
  const auto before = read_text(tmp.file("run/checkpoints/last.pt"));
  // A file-size limit below a checkpoint's size stands in for a full disk (same failing write).
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit small = old_limit;
  // Room for the next epoch's appended TensorBoard events (a few KiB), not for a checkpoint.
  uintmax_t largest_log = 0;
  for (const auto& e : fs::recursive_directory_iterator(tmp.file("run/tensorboard")))
    if (e.is_regular_file()) largest_log = std::max(largest_log, e.file_size());
  small.rlim_cur = largest_log + 16384;
  ASSERT_GT(before.size(), small.rlim_cur);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  Config longer = c;
  longer.train.epochs = 2;
  run.resume = true;
  const auto msg = error_of([&] { train::train_autoencoder(longer, run); });
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(msg.find("cannot write the checkpoint " + tmp.file("run/checkpoints/")), std::string::npos) << msg;
  EXPECT_NE(msg.find("the previous checkpoint, if any, is intact"), std::string::npos) << msg;
  EXPECT_EQ(read_text(tmp.file("run/checkpoints/last.pt")), before);
  for (const auto& e : fs::directory_iterator(tmp.file("run/checkpoints")))
    EXPECT_FALSE(is_temp_file_name(e.path().filename().string())) << e.path();
  // With space again, the run resumes and ends like an uninterrupted one.
  EXPECT_NO_THROW(train::train_autoencoder(longer, run));
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
}

namespace {

/// An events file read without pae's writer: every record's two masked CRC-32C checked (bitwise
/// CRC here, a table in the writer), each Event's step and its scalar or other values by tag.
struct TbValue {
  int64_t step;
  std::string tag;
  int kind;  ///< the Value field: 2 simple_value, 4 image, 5 histogram
  float scalar;
};
uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t crc = 0xFFFFFFFFu;
  for (const unsigned char c : s) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}
uint32_t masked(const std::string& s) {
  const uint32_t c = crc32c_bitwise(s);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}
struct Proto {  // the fields of one message: field number -> (wire type, raw value or bytes)
  std::vector<std::tuple<int, int, uint64_t, std::string>> fields;
  explicit Proto(const std::string& b) {
    size_t at = 0;
    const auto varint = [&] {
      uint64_t v = 0;
      for (int shift = 0;; shift += 7) {
        if (at >= b.size() || shift > 63) throw std::runtime_error("bad varint");
        const auto c = static_cast<unsigned char>(b[at++]);
        v |= uint64_t(c & 0x7f) << shift;
        if (!(c & 0x80)) return v;
      }
    };
    while (at < b.size()) {
      const uint64_t key = varint();
      const int field = int(key >> 3), wire = int(key & 7);
      if (wire == 0) {
        fields.emplace_back(field, wire, varint(), "");
      } else if (wire == 1 || wire == 5) {
        const size_t n = wire == 1 ? 8 : 4;
        if (at + n > b.size()) throw std::runtime_error("cut fixed field");
        uint64_t v = 0;
        std::memcpy(&v, b.data() + at, n);
        fields.emplace_back(field, wire, v, "");
        at += n;
      } else if (wire == 2) {
        const uint64_t n = varint();
        if (n > b.size() - at) throw std::runtime_error("cut bytes field");
        fields.emplace_back(field, wire, 0, b.substr(at, n));
        at += n;
      } else {
        throw std::runtime_error("wire type " + std::to_string(wire));
      }
    }
  }
};
std::vector<TbValue> read_events(const std::string& dir) {
  std::vector<TbValue> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string b = read_text(e.path());
    size_t at = 0;
    const auto u32 = [&](size_t i) {
      uint32_t v;
      std::memcpy(&v, b.data() + i, 4);
      return v;
    };
    while (at < b.size()) {
      EXPECT_LE(at + 16, b.size());
      uint64_t len;
      std::memcpy(&len, b.data() + at, 8);
      EXPECT_EQ(u32(at + 8), masked(b.substr(at, 8))) << "length CRC at " << at;
      const std::string data = b.substr(at + 12, len);
      EXPECT_EQ(u32(at + 12 + len), masked(data)) << "data CRC at " << at;
      at += 16 + len;
      int64_t step = -1;
      for (const auto& [f, w, v, bytes] : Proto(data).fields) {
        if (f == 2) step = int64_t(v);
        if (f != 5) continue;  // summary
        for (const auto& [sf, sw, sv, value] : Proto(bytes).fields) {
          TbValue tv{step, "", 0, 0};
          for (const auto& [vf, vw, vv, vb] : Proto(value).fields) {
            if (vf == 1) tv.tag = vb;
            if (vf == 2) {
              tv.kind = 2;
              const auto bits = uint32_t(vv);
              std::memcpy(&tv.scalar, &bits, 4);
            }
            if (vf == 4 || vf == 5) tv.kind = vf;
          }
          out.push_back(tv);
        }
      }
    }
  }
  return out;
}

}  // namespace

TEST(Train, TensorBoardEventsHoldEveryMetricsValueAndSurviveResume) {
  TempDir tmp;
  Config c = tiny_config(tmp, 2);
  train::RunOptions run{tmp.file("run"), "cpu", false, false, true};
  train::train_autoencoder(c, run);
  Config longer = c;
  longer.train.epochs = 3;
  run.resume = true;
  train::train_autoencoder(longer, run);  // epochs 1-2 kept, 3 added
  const auto events = read_events(tmp.file("run/tensorboard"));
  // Every number of every metrics.jsonl line is a scalar of the same name at step = epoch, once.
  std::istringstream lines(read_text(tmp.file("run/metrics.jsonl")));
  int checked = 0;
  for (std::string line; std::getline(lines, line);) {
    const auto json = nlohmann::json::parse(line);
    const int64_t epoch = json.at("epoch").get<int64_t>();
    for (const auto& [key, value] : json.items()) {
      if (key == "epoch" || !value.is_number()) continue;
      int found = 0;
      for (const auto& e : events)
        if (e.kind == 2 && e.tag == key && e.step == epoch) {
          ++found;
          EXPECT_FLOAT_EQ(e.scalar, float(value.get<double>())) << key << " epoch " << epoch;
        }
      EXPECT_EQ(found, 1) << key << " epoch " << epoch;
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
  // Pictures and histograms: every epoch here (3 epochs, every max(1, 3/10) = 1), once each.
  for (const std::string tag : {"reconstructions", "samples", "latents", "latent_0"})
    for (int64_t epoch = 1; epoch <= 3; ++epoch)
      EXPECT_EQ(std::count_if(events.begin(), events.end(),
                              [&](const TbValue& e) { return e.tag == tag && e.step == epoch && e.kind != 2; }),
                1)
          << tag << " epoch " << epoch;
  // A resume from epoch 2's checkpoint drops what later epochs wrote, and only that.
  report::EventWriter(tmp.file("run/tensorboard")).truncate_after(2);
  const auto kept = read_events(tmp.file("run/tensorboard"));
  EXPECT_EQ(kept.size(),
            size_t(std::count_if(events.begin(), events.end(), [](const TbValue& e) { return e.step <= 2; })));
  EXPECT_TRUE(std::none_of(kept.begin(), kept.end(), [](const TbValue& e) { return e.step > 2; }));
  // A record cut short by a kill (its first 14 bytes) is dropped too: every record left reads back.
  std::string events_file;
  for (const auto& e : fs::directory_iterator(tmp.file("run/tensorboard"))) events_file = e.path().string();
  const std::string whole = read_text(events_file);
  append_bytes(events_file, whole.substr(0, 14));
  report::EventWriter(tmp.file("run/tensorboard")).truncate_after(2);
  EXPECT_EQ(read_text(events_file), whole);
}

TEST(Train, ACorruptCheckpointIsRefusedBeforeLibTorchReadsIt) {
  TempDir tmp;
  Config c = tiny_config(tmp, 1);
  train::train_autoencoder(c, {tmp.file("run"), "cpu", false, false, true});
  const std::string good = read_text(tmp.file("run/checkpoints/last.pt"));
  auto model = models::build_autoencoder(c.model, {1, 8, 8});
  EXPECT_NO_THROW(train::load_checkpoint_bytes(good, "good.pt", *model, {}, model->signature()));
  // One bit flipped inside the first stored tensor's bytes: LibTorch would load it as a weight.
  const auto entry = good.find("/data/0");
  ASSERT_NE(entry, std::string::npos);
  std::string flipped = good;
  flipped[good.find("PK", entry) - 7] ^= 0x10;  // in the data before the next zip header
  auto msg = error_of([&] { train::load_checkpoint_bytes(flipped, "flipped.pt", *model, {}, ""); });
  EXPECT_NE(msg.find("checkpoint flipped.pt is corrupt or not a pae checkpoint"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fails its CRC-32 check"), std::string::npos) << msg;
  // Cut short anywhere: a clear error, never a crash.
  for (const size_t keep : {size_t(10), good.size() / 3, good.size() - 30, good.size() - 1}) {
    msg = error_of([&] { train::load_checkpoint_bytes(good.substr(0, keep), "cut.pt", *model, {}, ""); });
    EXPECT_NE(msg.find("checkpoint cut.pt"), std::string::npos) << keep << ": " << msg;
  }
}

TEST(Train, ADivergedAutoEncoderIsAnErrorNotASuccess) {
  TempDir tmp;
  Config c = tiny_config(tmp, 17);
  c.train.batch_size = 8;  // 10 steps an epoch: 170 in all
  c.train.lr = 1e6;
  // Smoke-test length (under 200 steps): worse than an untrained decoder's grey image too, so an
  // error as well, naming both figures; its state says why.
  train::RunOptions run{tmp.file("short"), "cpu", false, false, true};
  const auto short_msg = error_of([&] { train::train_autoencoder(c, run); });
  EXPECT_NE(short_msg.find("and than an untrained decoder's grey image"), std::string::npos) << short_msg;
  EXPECT_NE(short_msg.find("after 170 optimizer steps"), std::string::npos) << short_msg;
  EXPECT_FALSE(fs::exists(tmp.file("short/latents/train.npy")));
  EXPECT_EQ(read_run_state(tmp.file("short")).state, "failed");
  // Past 200 steps at lr 1e6: the run stops with the figures, and writes no latents or summary.
  c.train.epochs = 25;
  run.run_dir = tmp.file("long");
  const auto msg = error_of([&] { train::train_autoencoder(c, run); });
  EXPECT_NE(msg.find("divergence check: the trained model reconstructs the first 32 test images with MSE"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("after 250 optimizer steps"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Lower train.lr (now 1e+06)"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(tmp.file("long/latents")));
  EXPECT_FALSE(fs::exists(tmp.file("long/summary.json")));
  EXPECT_TRUE(fs::exists(tmp.file("long/checkpoints/last.pt")));
  // At a sane rate the same run passes the check; switched off, the diverged one is kept.
  c.train.lr = 1e-3;
  run.run_dir = tmp.file("sane");
  EXPECT_NO_THROW(train::train_autoencoder(c, run));
  c.train.lr = 1e6;
  c.train.divergence_check = false;
  run.run_dir = tmp.file("kept");
  EXPECT_NO_THROW(train::train_autoencoder(c, run));
  EXPECT_TRUE(fs::exists(tmp.file("kept/summary.json")));
}

TEST(Train, RunsRecordHowTheyEndedAndUnfinishedRunsAreWarnedOrRefused) {
  TempDir tmp;
  Config c = tiny_config(tmp, 2);
  train::RunOptions run{tmp.file("run"), "cpu", false, false, true};
  train::train_autoencoder(c, run);
  auto state = read_run_state(tmp.file("run"));
  EXPECT_EQ(state.state, "finished");
  EXPECT_EQ(state.epoch, 2);
  EXPECT_NO_THROW(check_run_finished(tmp.file("run"), "best", 2, true));
  // "running" with nobody holding the lock: the process died without a word.
  write_run_state(tmp.file("run"), "running");
  EXPECT_EQ(read_run_state(tmp.file("run")).state, "killed");
  auto msg = error_of([&] { check_run_finished(tmp.file("run"), "best", 2, true); });
  EXPECT_NE(msg.find(tmp.file("run") + " is killed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("its best checkpoint (epoch 2) is from an unfinished run; --resume"), std::string::npos) << msg;
  EXPECT_NO_THROW(check_run_finished(tmp.file("run"), "best", 2, false));  // a warning
  msg = error_of([&] { eval::Pae::load(tmp.file("run"), "", "", "cpu", true); });
  EXPECT_NE(msg.find("is killed"), std::string::npos) << msg;
  {  // held by a live process: running
    train::RunDirectory held(tmp.file("run"), true, false, "train.log");
    EXPECT_EQ(read_run_state(tmp.file("run")).state, "running");
  }
  // --resume of a run that never wrote a checkpoint starts it from scratch.
  fs::remove_all(tmp.file("run/checkpoints"));
  run.resume = true;
  EXPECT_EQ(train::train_autoencoder(c, run).epochs_completed, 2);
  EXPECT_EQ(read_run_state(tmp.file("run")).state, "finished");
  EXPECT_EQ(count_lines(tmp.file("run/metrics.jsonl")), 2);
  // An error in training: failed, with the message.
  c.train.lr = 1e30;
  run = train::RunOptions{tmp.file("nan"), "cpu", false, false, true};
  EXPECT_NE(error_of([&] { train::train_autoencoder(c, run); }), "");
  state = read_run_state(tmp.file("nan"));
  EXPECT_EQ(state.state, "failed");
  EXPECT_NE(state.reason.find("not finite"), std::string::npos) << state.reason;
}
