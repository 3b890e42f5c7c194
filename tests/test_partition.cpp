// The pieces of a partitioned job that need no files: reading --partition, the balanced split
// of shards into parts, and the names of the parts' bookkeeping files.

#include <gtest/gtest.h>

#include <numeric>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/partition.h"
#include "qs/ckpt/plan/plan.h"

namespace qs {
namespace {

std::string partition_error(const std::string& text) {
  try {
    parse_partition(text);
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), "cli.bad_partition") << text;
    EXPECT_NE(std::string(error.what()).find("--partition"), std::string::npos) << error.what();
    return error.what();
  }
  ADD_FAILURE() << "'" << text << "' was accepted";
  return {};
}

TEST(Partition, ReadsIndexSlashCount) {
  EXPECT_EQ(parse_partition("0/1"), (Partition{0, 1}));
  EXPECT_EQ(parse_partition("3/4"), (Partition{3, 4}));
  EXPECT_EQ(parse_partition("999/1000"), (Partition{999, 1000}));
  EXPECT_EQ(partition_label({2, 7}), "2/7");
}

TEST(Partition, RefusesIndexPastCountZeroCountAndMalformedText) {
  EXPECT_NE(partition_error("4/4").find("I must be below N"), std::string::npos);
  EXPECT_NE(partition_error("7/3").find("numbered 0 to 2"), std::string::npos);
  EXPECT_NE(partition_error("0/0").find("N must be"), std::string::npos);
  EXPECT_NE(partition_error("0/2000000").find("N must be"), std::string::npos);
  for (const char* text : {"", "1", "1/", "/4", "a/4", "1/b", "-1/4", "1/-4", "+1/4", " 1/4",
                           "1/4 ", "1 /4", "1/4/5", "1.0/4", "0x1/4", "1:4"})
    partition_error(text);
}

TEST(Partition, BookkeepingFileNamesRoundTrip) {
  EXPECT_EQ(part_job_file_name({2, 4}), "quantsmith-job.part-2-of-4.json");
  EXPECT_EQ(part_lock_file_name({2, 4}), "quantsmith-job.part-2-of-4.lock");
  EXPECT_EQ(partition_of_job_file("quantsmith-job.part-2-of-4.json"), (Partition{2, 4}));
  EXPECT_EQ(partition_of_lock_file("quantsmith-job.part-0-of-1.lock"), (Partition{0, 1}));
  for (const char* name :
       {"quantsmith-job.json", "quantsmith-job.part-4-of-4.json", "quantsmith-job.part-1-of-0.json",
        "quantsmith-job.part-x-of-4.json", "quantsmith-job.part-1-of-4.lock.json",
        "model-00001-of-00004.safetensors", "quantsmith-job.part-1-4.json"})
    EXPECT_EQ(partition_of_job_file(name).count, 0u) << name;
  EXPECT_EQ(partition_of_lock_file("quantsmith-job.part-1-of-4.json").count, 0u);
}

// Each part's summed cost, and a check that parts are contiguous runs in order.
std::vector<std::uint64_t> part_loads(const std::vector<std::uint64_t>& costs,
                                      const std::vector<std::size_t>& part_of, std::size_t parts) {
  std::vector<std::uint64_t> loads(parts, 0);
  for (std::size_t shard = 0; shard < costs.size(); ++shard) {
    EXPECT_LT(part_of[shard], parts);
    if (shard > 0) EXPECT_GE(part_of[shard], part_of[shard - 1]) << "not contiguous at " << shard;
    loads[part_of[shard]] += costs[shard];
  }
  return loads;
}

TEST(Partition, EqualShardsSplitEvenly) {
  const std::vector<std::uint64_t> costs(12, 1000);
  const auto part_of = assign_shards(costs, 4);
  EXPECT_EQ(part_loads(costs, part_of, 4), (std::vector<std::uint64_t>(4, 3000)));
  const auto three = assign_shards(costs, 3);
  EXPECT_EQ(part_loads(costs, three, 3), (std::vector<std::uint64_t>(3, 4000)));
  EXPECT_EQ(assign_shards(costs, 1), std::vector<std::size_t>(12, 0));
}

TEST(Partition, UnequalShardsBalanceByCostWithinOneShard) {
  // A cheap embedding shard, expensive expert shards, a cheap head: every part's load is
  // within the largest shard's cost of the ideal share.
  std::vector<std::uint64_t> costs = {10, 900, 850, 1200, 40, 700, 1100, 980, 5, 600, 30, 1000};
  const std::uint64_t total = std::accumulate(costs.begin(), costs.end(), std::uint64_t{0});
  const std::uint64_t largest = *std::max_element(costs.begin(), costs.end());
  for (std::size_t parts : {2, 3, 4, 5}) {
    const auto loads = part_loads(costs, assign_shards(costs, parts), parts);
    for (const auto load : loads) {
      EXPECT_LE(load, total / parts + largest) << parts << " parts";
      EXPECT_GE(load + largest, total / parts) << parts << " parts";
    }
  }
}

TEST(Partition, MorePartsThanShardsLeavesSomePartsEmpty) {
  const std::vector<std::uint64_t> costs = {100, 100};
  const auto part_of = assign_shards(costs, 5);
  const auto loads = part_loads(costs, part_of, 5);
  EXPECT_EQ(std::count(loads.begin(), loads.end(), 0u), 3);
  EXPECT_NE(part_of[0], part_of[1]);
}

TEST(Partition, CostsNearTheLimitsDoNotOverflow) {
  // A GLM-5-sized job weighs ~1e16 byte-equivalents: sums times part counts need more than
  // 64 bits.
  const std::vector<std::uint64_t> costs(8, std::uint64_t{1} << 60);
  const auto part_of = assign_shards(costs, 1000);
  const auto loads = part_loads(costs, part_of, 1000);
  EXPECT_EQ(std::count(loads.begin(), loads.end(), std::uint64_t{1} << 60), 8);
  EXPECT_EQ(assign_shards(std::vector<std::uint64_t>(6, 0), 3),
            (std::vector<std::size_t>{0, 0, 1, 1, 2, 2}));
}

// A transform that solves something: its arithmetic weighs `extra` byte-equivalents.
class SolverTransform final : public Transform {
 public:
  explicit SolverTransform(std::uint64_t extra) : extra_(extra) {}
  std::string describe() const override { return "solver"; }
  std::vector<TensorQuality> run(std::span<const SourceTensor>,
                                 std::span<const std::span<std::byte>>) const override {
    return {};
  }
  std::uint64_t extra_cost(const PlanItem&) const override { return extra_; }

 private:
  std::uint64_t extra_;
};

TEST(Partition, ShardCostsAreBytesPlusArithmeticSpreadByOutputBytes) {
  // Sources of 100 bytes each; BF16 outputs of 50 elements (100 bytes) or 25 (50 bytes).
  std::vector<TensorInfo> sources(3);
  for (std::size_t i = 0; i < sources.size(); ++i)
    sources[i] = {"s" + std::to_string(i), DType::BF16, {50}, 100 * i, 100 * (i + 1)};
  const auto spec = [](const std::string& name, std::int64_t elements) {
    return TensorSpec{name, DType::BF16, {elements}};
  };
  Plan plan;
  PlanItem copy;
  copy.sources = {{0, nullptr, &sources[0]}};
  copy.transform = make_copy_transform();
  copy.outputs = {spec("a", 50)};
  PlanItem solve;
  solve.sources = {{0, nullptr, &sources[1]}};
  solve.transform = std::make_shared<SolverTransform>(900);
  solve.outputs = {spec("b", 50)};
  // One item, outputs of 100 and 50 bytes in two shards: cost 100 + 150 + 300 = 550.
  PlanItem split;
  split.sources = {{0, nullptr, &sources[2]}};
  split.transform = std::make_shared<SolverTransform>(300);
  split.outputs = {spec("c", 50), spec("d", 25)};
  plan.items = {copy, solve, split};
  const std::vector<std::vector<TensorSpec>> shards = {
      {spec("a", 50)}, {spec("b", 50), spec("c", 50)}, {spec("d", 25)}};
  // a: 100 + 100; b: 100 + 100 + 900; c: 550 · 100/150; d: 550 · 50/150.
  EXPECT_EQ(shard_costs(plan, shards), (std::vector<std::uint64_t>{200, 1100 + 366, 183}));
  // The solver's shard weighs more than the other two together: it is a part of its own.
  EXPECT_EQ(assign_shards(shard_costs(plan, shards), 2), (std::vector<std::size_t>{0, 1, 1}));
  EXPECT_EQ(assign_shards(shard_costs(plan, shards), 3), (std::vector<std::size_t>{0, 1, 2}));
}

}  // namespace
}  // namespace qs
