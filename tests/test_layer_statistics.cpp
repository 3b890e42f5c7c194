// One layer's statistics in memory (qs/run/layer_statistics.h): what it serves equals what the
// statistics file stores, the pooled expert sums are the sums of the experts' matrices, NaN
// inputs are rejected naming layer and module, and the bytes held are accounted.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/plan/calibration_store.h"
#include "qs/run/calibration.h"
#include "qs/run/language_model.h"
#include "qs/run/layer_statistics.h"
#include "test_support.h"

namespace qs::run {
namespace {

using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();
constexpr std::uint64_t kMoeLayer = 2;  // glm5-tiny: layers 1.. are MoE
const std::string kExperts = fmt::format("model.layers.{}.mlp.experts", kMoeLayer);

class LayerStatisticsTest : public ::testing::Test {
 protected:
  void SetUp() override { tokens_ = read_token_batch(kModel / "tokens.safetensors", "calib", 2); }

  // Runs layers 0..kMoeLayer; the last one with `statistics` watching.
  void run_moe_layer(LayerStatistics& statistics, bool all_experts) {
    const LanguageModel model(checkpoint_);
    auto hidden = model.embed(tokens_.ids, tokens_.rows, tokens_.seq);
    RunOptions run;
    for (std::uint64_t layer = 0; layer < kMoeLayer; ++layer) model.run_layer(layer, hidden, run);
    run.observer = &statistics;
    run.all_experts = all_experts;
    model.run_layer(kMoeLayer, hidden, run);
    statistics.finish();
  }

  Checkpoint checkpoint_ = Checkpoint::open(kModel);
  TokenBatch tokens_;
  ScratchDirectory scratch_{"layer-statistics"};
};

TEST_F(LayerStatisticsTest, ServesWhatTheStatisticsFileStores) {
  calibrate(checkpoint_, tokens_, scratch_.path() / "stats.qs", {});
  const auto store = CalibrationStore::open(scratch_.path() / "stats.qs");
  LayerStatistics statistics(kMoeLayer, {16, true});
  run_moe_layer(statistics, false);
  std::uint64_t compared = 0;
  for (const auto& entry : statistics.entries()) {
    const auto* stored = store.find(entry.module);
    ASSERT_TRUE(stored) << entry.module;
    EXPECT_EQ(stored->tokens, entry.tokens) << entry.module;
    EXPECT_EQ(stored->input_amax, entry.input_amax) << entry.module;
    EXPECT_EQ(store.second_moments(entry.module), statistics.second_moments(entry.module))
        << entry.module;
    ++compared;
  }
  EXPECT_GT(compared, 30u);
  EXPECT_EQ(statistics.routing().at(kMoeLayer), store.routing().at(kMoeLayer));
}

TEST_F(LayerStatisticsTest, PoolsTheExpertsUnderRoutedCalibration) {
  LayerStatistics statistics(kMoeLayer, {16, true});
  run_moe_layer(statistics, false);
  for (const auto& [pooled, projection] :
       {std::pair{pooled_gate_up_input(kExperts), "gate_proj"},
        std::pair{pooled_down_input(kExperts), "down_proj"}}) {
    const auto* entry = statistics.find(pooled);
    ASSERT_TRUE(entry) << pooled;
    std::vector<double> sum;
    std::uint64_t tokens = 0;
    for (int e = 0; e < 16; ++e) {
      const auto module = fmt::format("{}.{}.{}", kExperts, e, projection);
      if (!statistics.find(module)) continue;
      const auto matrix = statistics.matrix(module);
      if (sum.empty()) sum.assign(matrix.size(), 0.0);
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += matrix[i];
      tokens += statistics.find(module)->tokens;
    }
    EXPECT_EQ(statistics.second_moments(pooled), sum) << pooled;
    EXPECT_EQ(entry->tokens, tokens);
    // Every token picks 4 of the 16 experts.
    EXPECT_EQ(tokens, 4 * tokens_.rows * tokens_.seq);
  }
  // The bytes held are the matrices: one per entry (nothing is shared under routed calibration).
  std::uint64_t bytes = 0;
  for (const auto& entry : statistics.entries())
    bytes += LayerStatistics::matrix_bytes(entry.in_features);
  EXPECT_EQ(statistics.bytes_held(), bytes);
}

TEST_F(LayerStatisticsTest, AllExpertsSharesOneGateUpMatrixAndPoolsNothing) {
  LayerStatistics statistics(kMoeLayer, {16, true});
  run_moe_layer(statistics, true);
  EXPECT_FALSE(statistics.find(pooled_gate_up_input(kExperts)));
  EXPECT_EQ(statistics.find(kExperts + ".5.up_proj")->shared_with,
            shared_gate_up_input(kExperts));
  EXPECT_EQ(statistics.matrix(kExperts + ".5.up_proj").data(),
            statistics.matrix(kExperts + ".11.gate_proj").data());
}

TEST(LayerStatistics, RejectsNonFiniteActivationsNamingLayerAndModule) {
  LayerStatistics statistics(7, {});
  const std::vector<float> inputs{1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN(), 4.0f};
  try {
    statistics.observe("model.layers.7.mlp.down_proj", inputs, 2, 2);
    FAIL() << "no error";
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "calibration.non_finite_activation");
    EXPECT_EQ(error.tensor(), "model.layers.7.mlp.down_proj");
    EXPECT_NE(error.detail().find("layer 7"), std::string::npos) << error.detail();
    EXPECT_NE(error.detail().find("NaN"), std::string::npos) << error.detail();
  }
  const std::vector<float> infinite{1.0f, std::numeric_limits<float>::infinity()};
  EXPECT_EQ(testing::error_kind_of([&] { statistics.observe("m", infinite, 1, 2); }),
            "calibration.non_finite_activation");
}

TEST(LayerStatistics, FlushWritesEveryEntryAndFreesTheMatrices) {
  ScratchDirectory scratch("layer-statistics-flush");
  LayerStatistics statistics(0, {});
  const std::vector<float> inputs{1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  statistics.observe("model.layers.0.mlp.down_proj", inputs, 2, 3);
  statistics.observe("model.layers.0.mlp.down_proj", inputs, 1, 3);  // adds to the same sums
  EXPECT_EQ(statistics.stored_matrices(), 1u);
  EXPECT_EQ(statistics.bytes_held(), LayerStatistics::matrix_bytes(3));
  CalibrationStoreWriter writer(scratch.path() / "s.qs", {"m", 3, false, "f64"});
  statistics.flush(writer);
  writer.commit();
  EXPECT_EQ(statistics.bytes_held(), 0u);
  const auto store = CalibrationStore::open(scratch.path() / "s.qs");
  EXPECT_EQ(store.find("model.layers.0.mlp.down_proj")->tokens, 3u);
  // Rows (1,2,3), (4,5,6), (1,2,3): XᵀX[0][1] = 2 + 20 + 2, mirrored.
  const auto matrix = store.second_moments("model.layers.0.mlp.down_proj");
  EXPECT_EQ(matrix[1], 24.0);
  EXPECT_EQ(matrix[3], 24.0);
  EXPECT_EQ(store.find("model.layers.0.mlp.down_proj")->input_amax, 6.0);
}

}  // namespace
}  // namespace qs::run
