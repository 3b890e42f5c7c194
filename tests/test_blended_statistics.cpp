// Few-token experts blended with their layer's pooled statistics (qs/quant/blended_statistics.h),
// over a real statistics file written here.

#include <gtest/gtest.h>

#include "qs/ckpt/plan/calibration_store.h"
#include "qs/quant/blended_statistics.h"
#include "test_support.h"

namespace qs {
namespace {

const std::string kExperts = "model.layers.1.mlp.experts";

std::vector<double> diagonal(double a, double b) { return {a, 0.0, 0.0, b}; }

class Blending : public ::testing::Test {
 protected:
  void SetUp() override {
    CalibrationStoreWriter writer(path_, {"model", 100, false, "f64"});
    writer.add(kExperts + ".0.gate_proj", 2, 10, diagonal(4.0, 6.0), 1.5);
    writer.add(kExperts + ".0.down_proj", 2, 10, diagonal(1.0, 1.0));
    writer.add(kExperts + ".2.gate_proj", 2, 90, diagonal(90.0, 90.0));
    writer.add(pooled_gate_up_input(kExperts), 2, 100, diagonal(200.0, 100.0), 3.0);
    writer.add(pooled_down_input(kExperts), 2, 100, diagonal(7.0, 7.0));
    writer.add("model.layers.1.mlp.shared_experts.gate_proj", 2, 100, diagonal(1.0, 2.0));
    writer.commit();
    store_ = std::make_unique<CalibrationStore>(CalibrationStore::open(path_));
  }
  testing::ScratchDirectory scratch_{"blending"};
  std::filesystem::path path_ = scratch_.path() / "stats.qs";
  std::unique_ptr<CalibrationStore> store_;
};

TEST_F(Blending, FillsFewTokenExpertsUpToTheThresholdFromThePool) {
  const BlendedStatistics blended(*store_, 50);
  // 10 own tokens + 40 tokens' worth of the pool (40/100 of its sums).
  const auto* entry = blended.find(kExperts + ".0.gate_proj");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->tokens, 50u);
  EXPECT_EQ(entry->input_amax, 1.5);
  EXPECT_EQ(blended.second_moments(kExperts + ".0.gate_proj"), diagonal(84.0, 46.0));
  EXPECT_EQ(blended.blend_of(kExperts + ".0.gate_proj")->pooled_weight, 0.4);
  // up_proj saw the gate's inputs: it blends with the same pool (and has no own entry here).
  EXPECT_EQ(blended.second_moments(kExperts + ".0.up_proj"), diagonal(100.0, 50.0));
  // No token at all: the pool alone, scaled to 50 tokens; the pool's amax.
  EXPECT_EQ(blended.second_moments(kExperts + ".1.gate_proj"), diagonal(100.0, 50.0));
  EXPECT_EQ(blended.find(kExperts + ".1.gate_proj")->input_amax, 3.0);
  // Enough tokens, a module that is not a routed expert: unchanged.
  EXPECT_EQ(blended.find(kExperts + ".2.gate_proj"), store_->find(kExperts + ".2.gate_proj"));
  EXPECT_FALSE(blended.blend_of(kExperts + ".2.gate_proj"));
  EXPECT_EQ(blended.second_moments("model.layers.1.mlp.shared_experts.gate_proj"),
            diagonal(1.0, 2.0));
  // down_proj is never blended, though the pooled down matrix is there: it stays as it is
  // (missing stays missing).
  EXPECT_EQ(blended.find(kExperts + ".0.down_proj"), store_->find(kExperts + ".0.down_proj"));
  EXPECT_FALSE(blended.find(kExperts + ".1.down_proj"));
}

TEST_F(Blending, ZeroThresholdBlendsNothing) {
  const BlendedStatistics blended(*store_, 0);
  EXPECT_FALSE(blended.find(kExperts + ".1.gate_proj"));
  EXPECT_EQ(blended.second_moments(kExperts + ".0.gate_proj"), diagonal(4.0, 6.0));
}

TEST(BlendingPool, APoolWithFewerTokensThanItsWidthLendsNothing) {
  testing::ScratchDirectory scratch("blending-small-pool");
  CalibrationStoreWriter writer(scratch.path() / "s.qs", {"model", 1, false, "f64"});
  writer.add(kExperts + ".0.gate_proj", 2, 1, diagonal(1.0, 0.0));
  writer.add(pooled_gate_up_input(kExperts), 2, 1, diagonal(1.0, 0.0));
  writer.commit();
  const auto store = CalibrationStore::open(scratch.path() / "s.qs");
  const BlendedStatistics blended(store, 50);
  EXPECT_FALSE(blended.blend_of(kExperts + ".0.gate_proj"));
  EXPECT_EQ(blended.find(kExperts + ".0.gate_proj")->tokens, 1u);
}

TEST(BlendingShared, AllExpertsEntriesStayShared) {
  testing::ScratchDirectory scratch("blending-shared");
  CalibrationStoreWriter writer(scratch.path() / "s.qs", {"model", 4, true, "f64"});
  writer.add(shared_gate_up_input(kExperts), 2, 4, diagonal(1.0, 1.0));
  writer.add_shared(kExperts + ".3.gate_proj", shared_gate_up_input(kExperts), 4);
  writer.add(pooled_gate_up_input(kExperts), 2, 100, diagonal(9.0, 9.0));
  writer.commit();
  const auto store = CalibrationStore::open(scratch.path() / "s.qs");
  const BlendedStatistics blended(store, 50);
  EXPECT_EQ(blended.find(kExperts + ".3.gate_proj")->shared_with, shared_gate_up_input(kExperts));
  EXPECT_EQ(blended.second_moments(kExperts + ".3.gate_proj"), diagonal(1.0, 1.0));
}

}  // namespace
}  // namespace qs
