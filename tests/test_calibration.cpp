// Calibration statistics: the store round-trips, and `calibrate` sums exactly the inputs each
// Linear saw (checked against XᵀX computed here from the model's own layer inputs).

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "qs/ckpt/plan/calibration_store.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/calibration.h"
#include "qs/run/language_model.h"
#include "qs/run/tensor_ops.h"
#include "test_support.h"

namespace qs::run {
namespace {

using testing::ScratchDirectory;

const std::filesystem::path kModel = std::filesystem::path(QS_TEST_DATA_DIR) / "glm5-tiny";

TEST(CalibrationStore, RoundTripsEntriesSharedEntriesAndRouting) {
  ScratchDirectory scratch("calibration-store");
  const auto path = scratch.path() / "stats.qs";
  CalibrationStoreWriter writer(path, {"model", 12, true, "f64"});
  writer.add("a.weightless", 2, 12, {1.0, 2.0, 2.0, 5.0});
  writer.add_shared("b", "a.weightless", 12);
  writer.set_routing(3, {4, 0, 8});
  writer.commit();
  const auto store = CalibrationStore::open(path);
  EXPECT_EQ(store.info().token_rows, 12u);
  EXPECT_TRUE(store.info().all_experts);
  EXPECT_EQ(store.second_moments("b"), (std::vector<double>{1.0, 2.0, 2.0, 5.0}));
  EXPECT_EQ(store.find("b")->shared_with, "a.weightless");
  EXPECT_EQ(store.routing().at(3), (std::vector<std::uint64_t>{4, 0, 8}));
  EXPECT_EQ(testing::error_kind_of([&] { store.second_moments("c"); }),
            "calibration.missing_module");
  std::ofstream(scratch.path() / "junk.qs") << "not a calibration file at all";
  EXPECT_EQ(testing::error_kind_of([&] { CalibrationStore::open(scratch.path() / "junk.qs"); }),
            "calibration.invalid");
}

class Calibrate : public ::testing::Test {
 protected:
  void SetUp() override { tokens_ = read_token_batch(kModel / "tokens.safetensors", "calib", 2); }
  Checkpoint checkpoint_ = Checkpoint::open(kModel);
  TokenBatch tokens_;
  ScratchDirectory scratch_{"calibrate"};
};

TEST_F(Calibrate, SumsExactlyWhatEachLinearSaw) {
  calibrate(checkpoint_, tokens_, scratch_.path() / "stats.qs", {});
  const auto store = CalibrationStore::open(scratch_.path() / "stats.qs");
  const std::uint64_t rows = tokens_.rows * tokens_.seq;
  // Layer 0's q_a_proj sees input_layernorm(embeddings).
  const LanguageModel model(checkpoint_);
  auto hidden = model.embed(tokens_.ids, tokens_.rows, tokens_.seq);
  rms_norm(hidden.values, WeightLoader(checkpoint_).vector("model.layers.0.input_layernorm.weight"),
           1e-5f);
  const std::uint64_t k = 256;
  const auto stored = store.second_moments("model.layers.0.self_attn.q_a_proj");
  ASSERT_EQ(stored.size(), k * k);
  double worst = 0.0;
  for (std::uint64_t i = 0; i < k; i += 7)
    for (std::uint64_t j = 0; j < k; j += 5) {
      double sum = 0.0;
      for (std::uint64_t r = 0; r < rows; ++r)
        sum += static_cast<double>(hidden.values[r * k + i]) * hidden.values[r * k + j];
      worst = std::max(worst, std::fabs(sum - stored[i * k + j]) / (std::fabs(sum) + 1e-30));
    }
  EXPECT_LT(worst, 1e-12);
  EXPECT_EQ(store.find("model.layers.0.self_attn.q_a_proj")->tokens, rows);
  EXPECT_TRUE(store.find("model.layers.2.self_attn.indexer.weights_proj"));
  EXPECT_TRUE(store.find("model.layers.4.eh_proj"));  // the MTP layer
  // Every token picks 4 experts; each expert's statistics count the tokens it got.
  for (const auto& [layer, counts] : store.routing()) {
    std::uint64_t total = 0;
    for (std::size_t e = 0; e < counts.size(); ++e) {
      total += counts[e];
      const auto* entry =
          store.find(fmt::format("model.layers.{}.mlp.experts.{}.down_proj", layer, e));
      EXPECT_EQ(entry ? entry->tokens : 0, counts[e]) << layer << " " << e;
    }
    EXPECT_EQ(total, (layer == 4 ? tokens_.rows * (tokens_.seq - 1) : rows) * 4) << layer;
  }
}

TEST_F(Calibrate, AllExpertsStoresTheSharedGateUpInputOnce) {
  CalibrationOptions options;
  options.all_experts = true;
  calibrate(checkpoint_, tokens_, scratch_.path() / "all.qs", options);
  const auto store = CalibrationStore::open(scratch_.path() / "all.qs");
  const std::uint64_t rows = tokens_.rows * tokens_.seq;
  const auto* gate = store.find("model.layers.2.mlp.experts.9.gate_proj");
  ASSERT_TRUE(gate);
  EXPECT_EQ(gate->shared_with, "model.layers.2.mlp.experts.gate_up_input");
  EXPECT_EQ(gate->tokens, rows);
  EXPECT_EQ(store.find("model.layers.2.mlp.experts.9.down_proj")->tokens, rows);
  // The shared input is the shared expert's input too.
  EXPECT_EQ(store.second_moments("model.layers.2.mlp.experts.9.up_proj"),
            store.second_moments("model.layers.2.mlp.shared_experts.gate_proj"));
  EXPECT_EQ(store.routing().at(2).size(), 16u);
}

}  // namespace
}  // namespace qs::run
