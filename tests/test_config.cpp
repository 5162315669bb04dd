#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "pae/config.h"
#include "pae/flows/flow.h"
#include "pae/models/autoencoder.h"
#include "pae/util/error.h"
#include "test_util.h"

using namespace pae;
using pae::testing::error_of;

TEST(Config, EveryShippedConfigParsesAndBuildsItsModel) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(PAE_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".yml") continue;
    ++count;
    SCOPED_TRACE(entry.path().string());
    Config c = load_config(entry.path().string());
    auto shape = models::known_image_shape(c.data);
    ASSERT_GT(shape.channels, 0);
    if (c.model.type == "classifier") continue;  // pae-train's domain classifier: no auto-encoder
    auto model = models::build_autoencoder(c.model, shape);
    model->eval();
    auto x = torch::rand({2, shape.channels, shape.height, shape.width});
    auto z = model->encode(x);
    EXPECT_EQ(z.sizes(), (std::vector<int64_t>{2, c.model.latent_dim}));
    EXPECT_EQ(model->decode(z).sizes(), x.sizes());
    EXPECT_TRUE(torch::isfinite(model->loss(x).loss).item<bool>());
    // Flow configs also build their flow on the AE's latent size.
    auto flow = pae::flows::build_flow(c.model.latent_dim, c.flow);
    EXPECT_EQ(flow->log_prob(torch::randn({3, c.model.latent_dim})).sizes(), (std::vector<int64_t>{3}));
  }
  EXPECT_GE(count, 5);
}

TEST(Config, UnknownKeyNamesFileLineAndValidKeys) {
  auto msg = error_of([] { parse_config("data:\n  name: mnist\ntrain:\n  epoch: 3\n", "x.yml"); });
  EXPECT_NE(msg.find("x.yml:4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.epoch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("epochs"), std::string::npos) << msg;
  msg = error_of([] { parse_config("trainer:\n  epochs: 3\n", "y.yml"); });
  EXPECT_NE(msg.find("y.yml:1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trainer"), std::string::npos) << msg;
}

TEST(Config, DuplicateKeysAndMissingSectionsAreErrors) {
  // YAML parsers keep the first of two equal keys without a word: here it is an error naming both lines.
  auto msg = error_of([] { parse_config("data:\n  name: mnist\ntrain:\n  epochs: 5\n  epochs: 2\n", "d.yml"); });
  EXPECT_NE(msg.find("d.yml:5: duplicate key 'train.epochs' (first given at line 4)"), std::string::npos) << msg;
  msg = error_of([] { parse_config("train:\n  lr: 1\ntrain:\n  epochs: 2\n", "d.yml"); });
  EXPECT_NE(msg.find("duplicate key 'train'"), std::string::npos) << msg;
  msg = error_of([] { parse_config("groups:\n  disc: {lr: 1, lr: 2}\n", "d.yml"); });
  EXPECT_NE(msg.find("duplicate key 'groups.disc.lr'"), std::string::npos) << msg;
  // A program refuses a config without its sections (an empty file, another program's config).
  const auto flow_config = parse_config("flow:\n  type: nsf\ntrain:\n  epochs: 2\n", "f.yml");
  msg = error_of([&] { require_sections(flow_config, {"data", "model"}, "pae-train", "a flow config?"); });
  EXPECT_NE(msg.find("f.yml: no 'data' section; pae-train needs data and model sections (a flow config?)"),
            std::string::npos)
      << msg;
  EXPECT_NO_THROW(require_sections(flow_config, {"flow"}, "pae-flow"));
  msg = error_of([] { require_sections(parse_config("", "empty.yml"), {"flow"}, "pae-flow"); });
  EXPECT_NE(msg.find("empty.yml: no 'flow' section"), std::string::npos) << msg;
  // Sections given by --set count: the user named them.
  EXPECT_NO_THROW(require_sections(parse_config("", "e.yml", {"model.latent_dim=4", "data.name=mnist"}),
                                   {"data", "model"}, "pae-train"));
}

TEST(Config, SizesThatWouldExhaustTheMachineAreRangeErrors) {
  // Each of these ended in an allocation failure, a hang or a crawl far from the key.
  for (const auto& [yaml, key] : std::vector<std::pair<std::string, std::string>>{
           {"model:\n  latent_dim: 2000000000\n", "model.latent_dim"},
           {"model:\n  arch: mlp\n  hidden: [400, 3000000]\n", "model.hidden"},
           {"model:\n  channels: [32, 9000000]\n", "model.channels"},
           {"model:\n  kernel: 200\n", "model.kernel"},
           {"train:\n  threads: 100000\n", "train.threads"},
           {"train:\n  blas_threads: 100000\n", "train.blas_threads"},
           {"flow:\n  hidden: 10000000\n", "flow.hidden"}}) {
    const auto msg = error_of([&] { parse_config(yaml, "r.yml"); });
    EXPECT_NE(msg.find(key), std::string::npos) << yaml << msg;
    EXPECT_NE(msg.find("r.yml:"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(parse_config("model:\n  latent_dim: 65536\ntrain:\n  threads: 2\n", "ok.yml"));
}

TEST(Config, WrongTypeAndRangeErrors) {
  auto msg = error_of([] { parse_config("train:\n  lr: 0.1\n  epochs: ten\n", "c.yml"); });
  EXPECT_NE(msg.find("c.yml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'ten'"), std::string::npos) << msg;
  msg = error_of([] { parse_config("train:\n  epochs: -3\n", "c.yml"); });
  EXPECT_NE(msg.find("c.yml:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("-3"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model:\n  hidden: 400x\n", "c.yml"); });
  EXPECT_NE(msg.find("model.hidden"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model:\n  latent_dim: [3]\n", "c.yml"); });
  EXPECT_NE(msg.find("model.latent_dim"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model: [1\n", "c.yml"); });
  EXPECT_NE(msg.find("YAML syntax"), std::string::npos) << msg;
}

TEST(Config, ARetiredKeyIsAnErrorSayingWhatReplacedItUnlessItMeansTheSame) {
  // train.latent_noise was in raw latent units; latent_noise_std is in units of each latent's std.
  auto msg = error_of([] { parse_config("train:\n  epochs: 2\n  latent_noise: 0.3\n", "old.yml"); });
  EXPECT_NE(msg.find("old.yml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("latent_noise_std"), std::string::npos) << msg;
  msg = error_of([] { parse_config("", "c.yml", {"train.latent_noise=0.3"}); });
  EXPECT_NE(msg.find("--set 'train.latent_noise=0.3'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("latent_noise_std"), std::string::npos) << msg;
  // Zero means the same in both units: every older run directory's config.yml lists it.
  EXPECT_EQ(parse_config("train:\n  latent_noise: 0\n", "run/config.yml").train.latent_noise_std, 0.0);
  EXPECT_EQ(parse_config("", "c.yml", {"train.latent_noise_std=0.1"}).train.latent_noise_std, 0.1);
  // A finished flow run's config.yml read for evaluation (which does not use the noise) loads.
  EXPECT_EQ(parse_config("train:\n  latent_noise: 0.3\n", "flow/config.yml", {}, RetiredKeys::ignore).train.epochs,
            Config().train.epochs);
}

TEST(Config, SetOverridesAnyKey) {
  Config c = parse_config("train:\n  epochs: 10\n", "c.yml",
                          {"train.epochs=3", "model.arch=mlp", "model.hidden=[64, 32]", "data.name=mnist"});
  EXPECT_EQ(c.train.epochs, 3);
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(c.data.name, "mnist");
  auto msg = error_of([] { parse_config("", "c.yml", {"train.epochs=-1"}); });
  EXPECT_NE(msg.find("--set train.epochs"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { parse_config("", "c.yml", {"train.nope=1"}); }).find("train.nope"), std::string::npos);
  EXPECT_NE(error_of([] { parse_config("", "c.yml", {"epochs"}); }).find("section.key=value"), std::string::npos);
}

TEST(Config, ResolvedYamlRoundTrips) {
  Config c =
      parse_config("model:\n  type: vae\n  arch: mlp\n  hidden: [10, 20]\ntrain:\n  lr: 0.005\n  seed: 42\n", "c.yml");
  Config back = parse_config(to_yaml(c), "resolved.yml");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_EQ(back.model.type, "vae");
  EXPECT_EQ(back.model.hidden, (std::vector<int64_t>{10, 20}));
  EXPECT_DOUBLE_EQ(back.train.lr, 0.005);
  EXPECT_EQ(back.train.seed, 42u);
}

TEST(Config, KeysTheChosenModelDoesNotUseAreErrors) {
  // model.beta means nothing to a plain AE: silently ignoring it would train something else
  // than the user believes.
  auto msg = error_of([] { parse_config("model:\n  type: ae\n  beta: 4\n", "c.yml"); });
  EXPECT_NE(msg.find("c.yml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model.beta'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vae"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model:\n  arch: conv\n  hidden: [64]\n", "c.yml"); });
  EXPECT_NE(msg.find("'model.hidden'"), std::string::npos) << msg;
  msg = error_of([] { parse_config("", "c.yml", {"model.type=vae", "model.sigma=0.2"}); });
  EXPECT_NE(msg.find("recon_loss gaussian"), std::string::npos) << msg;
  msg = error_of([] { parse_config("model:\n  type: classifier\n  latent_dim: 8\n", "c.yml"); });
  EXPECT_NE(msg.find("c.yml:3: key 'model.latent_dim' is not used by model.type 'classifier'"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("fixed architecture"), std::string::npos) << msg;
  // A default value changes nothing and is accepted (runs of earlier versions wrote every key).
  EXPECT_EQ(error_of([] { parse_config("model:\n  type: ae\n  beta: 1.0\n  hidden: [400]\n", "c.yml"); }), "");
  // The resolved config of a run leaves such keys out, so it parses back.
  Config ae = parse_config("model:\n  type: ae\n", "c.yml");
  EXPECT_EQ(to_yaml(ae).find("beta"), std::string::npos);
  EXPECT_EQ(to_yaml(parse_config(to_yaml(ae), "resolved.yml")), to_yaml(ae));
  Config vae = parse_config("model:\n  type: vae\n  recon_loss: gaussian\n  sigma: 0.2\n", "c.yml");
  EXPECT_DOUBLE_EQ(parse_config(to_yaml(vae), "resolved.yml").model.family<models::VaeOptions>().sigma, 0.2);
}

TEST(Config, GroupsOverrideTheOptimizerOfOneParameterGroup) {
  Config c = parse_config("train:\n  lr: 1.0e-3\ngroups:\n  disc:\n    lr: 1.0e-4\n    optimizer: sgd\n", "g.yml",
                          {"groups.gen.warmup_epochs=2"});
  ASSERT_EQ(c.groups.size(), 2u);
  EXPECT_DOUBLE_EQ(*c.groups.at("disc").lr, 1e-4);
  EXPECT_EQ(*c.groups.at("disc").optimizer, "sgd");
  EXPECT_FALSE(c.groups.at("disc").momentum.has_value());
  EXPECT_EQ(*c.groups.at("gen").warmup_epochs, 2);
  // Round trip through the resolved YAML keeps exactly the keys given.
  const Config back = parse_config(to_yaml(c), "resolved.yml");
  EXPECT_EQ(to_yaml(back), to_yaml(c));
  EXPECT_FALSE(back.groups.at("gen").lr.has_value());
  // Errors name file, line and the full key.
  auto msg = error_of([] { parse_config("groups:\n  disc:\n    lr: fast\n", "g.yml"); });
  EXPECT_NE(msg.find("g.yml:3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'groups.disc.lr'"), std::string::npos) << msg;
  msg = error_of([] { parse_config("groups:\n  disc:\n    epochs: 3\n", "g.yml"); });
  EXPECT_NE(msg.find("'groups.disc.epochs'"), std::string::npos) << msg;
  msg = error_of([] { parse_config("groups:\n  disc:\n    optimizer: lbfgs\n", "g.yml"); });
  EXPECT_NE(msg.find("groups.disc.optimizer"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { parse_config("", "g.yml", {"groups.lr=1"}); }).find("groups.<group>.<key>"),
            std::string::npos);
}

TEST(Config, ChangesBetweenConfigsAndWhichMayChangeOnResume) {
  Config a = parse_config("", "a.yml"), b = a;
  b.train.lr = 0.5;
  b.model.channels = {7, 8};
  b.groups["disc"].lr = 0.25;
  const auto changes = config_changes(to_yaml(a), to_yaml(b));
  std::vector<std::string> keys;
  for (const auto& c : changes) keys.push_back(c.key);
  ASSERT_EQ(keys.size(), 3u) << ::testing::PrintToString(keys);
  EXPECT_EQ(keys[0], "groups.disc.lr");
  EXPECT_EQ(changes[0].before, "(absent)");
  EXPECT_EQ(keys[1], "model.channels");
  EXPECT_EQ(changes[1].after, "[7, 8]");
  EXPECT_EQ(keys[2], "train.lr");
  EXPECT_TRUE(config_changes(to_yaml(a), to_yaml(a)).empty());
  for (const char* k : {"train.epochs", "train.lr", "train.threads", "groups.disc.lr", "model.nae_epochs", "data.root"})
    EXPECT_TRUE(may_change_on_resume(k)) << k;
  for (const char* k : {"model.hidden", "model.latent_dim", "data.name", "train.seed", "train.batch_size",
                        "train.optimizer", "flow.layers", "groups.disc.optimizer"})
    EXPECT_FALSE(may_change_on_resume(k)) << k;
}

TEST(Config, AResumedRunFromBeforeANewKeyTakesTheKeysDefault) {
  Config c = parse_config("train:\n  epochs: 3\n", "c.yml");
  std::string stored = to_yaml(c);
  // A run started before train.ema existed: its stored config lacks the key.
  const std::string line = "  ema: 0\n";
  const auto at = stored.find(line);
  ASSERT_NE(at, std::string::npos) << stored;
  stored.erase(at, line.size());
  EXPECT_FALSE(config_changes(stored, to_yaml(c)).empty());  // compared as text: "(absent) -> 0"
  EXPECT_TRUE(changes_since(stored, "run/config.yml", c).empty());
  // The key at another value than its default is a change.
  c.train.ema = 0.999;
  const auto changes = changes_since(stored, "run/config.yml", c);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].key, "train.ema");
  // A stored config with the retired raw-unit noise is refused with the retired key's message.
  auto old = stored;
  old.insert(old.find("train:\n") + 7, "  latent_noise: 0.3\n");
  EXPECT_NE(error_of([&] { changes_since(old, "run/config.yml", c); }).find("latent_noise_std"), std::string::npos);
}

TEST(Config, CheckpointEveryTakesStepsOrMinutes) {
  EXPECT_EQ(parse_checkpoint_every("0").steps, 0);
  EXPECT_EQ(parse_checkpoint_every("0").minutes, 0);
  EXPECT_EQ(parse_checkpoint_every("500").steps, 500);
  EXPECT_EQ(parse_checkpoint_every("500 steps").steps, 500);
  EXPECT_EQ(parse_checkpoint_every("10 min").minutes, 10);
  EXPECT_EQ(parse_checkpoint_every("2.5min").minutes, 2.5);
  EXPECT_EQ(parse_checkpoint_every("2.5min").steps, 0);
  for (const std::string bad : {"ten", "-5", "1.5", "5 hours", "0 min", ""}) {
    const auto message = pae::testing::error_of([&] { parse_checkpoint_every(bad); });
    EXPECT_NE(message.find("train.checkpoint_every '" + bad + "': expected 0 (off)"), std::string::npos) << message;
  }
}
