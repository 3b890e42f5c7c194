// The plan → stream executor: byte-exact streaming, shard caps, bounded buffers, the job file,
// resume after an interruption, and refusals (non-empty output, changed job).

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/plan/recipe.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::directory_contents;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();

constexpr const char* kCastRecipe = R"(
rules:
  - role: indexer.weights_proj
    action: f32
  - category: router
    action: keep
)";

QuantizePlan plan_for(const Checkpoint& source, const char* recipe_text) {
  return plan_quantization(source, parse_recipe(recipe_text, "test"),
                           [](const QuantizeRequest&) { return make_copy_transform(); });
}

std::string file_bytes(const std::filesystem::path& path) { return read_text_file(path); }

// Every regular file of `directory` (name → bytes), skipping hidden ones.
ExecutionOptions options_for(const std::filesystem::path& output, std::uint64_t shard_cap) {
  ExecutionOptions options;
  options.output_directory = output;
  options.max_shard_bytes = shard_cap;
  options.fingerprint = "test";
  options.extra_files = {{"config.json", "{}\n"}};
  return options;
}

TEST(Executor, CopiesAndCastsTensorsExactly) {
  auto source = Checkpoint::open(kModel);
  auto planned = plan_for(source, kCastRecipe);
  ScratchDirectory scratch("executor-copy");
  auto report = execute_plan(planned.plan, options_for(scratch.path() / "out", 4'000'000));
  EXPECT_FALSE(report.interrupted);
  EXPECT_GT(report.total_shards, 3u);
  auto output = Checkpoint::open(scratch.path() / "out");
  ASSERT_EQ(output.tensors().size(), source.tensors().size());
  for (const auto& location : source.tensors()) {
    const auto& name = location.info->name;
    const auto copied = output.at(name);
    const auto original = location.shard->read(*location.info);
    if (name.find("weights_proj") != std::string::npos) {
      ASSERT_EQ(copied.info->dtype, DType::F32) << name;
      const auto widened = copied.shard->read(*copied.info);
      for (std::size_t i = 0; i < location.info->element_count(); ++i) {
        std::uint32_t bits = 0;
        std::memcpy(&bits, widened.data() + 4 * i, 4);
        std::uint16_t bf16 = 0;
        std::memcpy(&bf16, original.data() + 2 * i, 2);
        ASSERT_EQ(bits, static_cast<std::uint32_t>(bf16) << 16) << name << " element " << i;
      }
    } else {
      EXPECT_EQ(copied.shard->read(*copied.info), original) << name;
    }
  }
  EXPECT_TRUE(std::filesystem::exists(scratch.path() / "out" / kIndexFileName));
  EXPECT_EQ(file_bytes(scratch.path() / "out" / "config.json"), "{}\n");
}

TEST(Executor, OutputDoesNotDependOnBufferBudgetOrRuns) {
  auto source = Checkpoint::open(kModel);
  auto planned = plan_for(source, kCastRecipe);
  ScratchDirectory scratch("executor-budget");
  auto roomy = options_for(scratch.path() / "roomy", 3'000'000);
  execute_plan(planned.plan, roomy);
  auto tight = options_for(scratch.path() / "tight", 3'000'000);
  tight.max_buffer_bytes = 1;  // every item runs alone
  execute_plan(planned.plan, tight);
  EXPECT_EQ(directory_contents(scratch.path() / "roomy"),
            directory_contents(scratch.path() / "tight"));
}

TEST(Executor, RefusesNonEmptyOutputWithoutResume) {
  auto source = Checkpoint::open(kModel);
  auto planned = plan_for(source, kCastRecipe);
  ScratchDirectory scratch("executor-nonempty");
  std::filesystem::create_directories(scratch.path() / "out");
  std::ofstream(scratch.path() / "out" / "notes.txt") << "mine";
  EXPECT_EQ(testing::error_kind_of([&] {
              execute_plan(planned.plan, options_for(scratch.path() / "out", 4'000'000));
            }),
            "output.not_empty");
  EXPECT_EQ(file_bytes(scratch.path() / "out" / "notes.txt"), "mine");
}

TEST(Executor, InterruptedRunResumesToIdenticalBytes) {
  auto source = Checkpoint::open(kModel);
  auto planned = plan_for(source, kCastRecipe);
  ScratchDirectory scratch("executor-resume");
  execute_plan(planned.plan, options_for(scratch.path() / "reference", 2'000'000));

  const auto output = scratch.path() / "resumed";
  std::atomic<bool> stop{true};  // stop after the first committed shard
  auto first = options_for(output, 2'000'000);
  first.stop_requested = &stop;
  auto interrupted = execute_plan(planned.plan, first);
  ASSERT_TRUE(interrupted.interrupted);
  EXPECT_EQ(interrupted.shards_written, 1u);
  EXPECT_FALSE(std::filesystem::exists(output / kIndexFileName));
  // What a kill mid-write leaves behind: a temp file of the next shard.
  std::ofstream(output / ".model-00002-of-00010.safetensors.tmp-1-0") << "partial";

  EXPECT_EQ(
      testing::error_kind_of([&] { execute_plan(planned.plan, options_for(output, 2'000'000)); }),
      "output.not_empty");
  auto again = options_for(output, 2'000'000);
  again.resume = true;
  auto resumed = execute_plan(planned.plan, again);
  EXPECT_FALSE(resumed.interrupted);
  EXPECT_EQ(resumed.shards_resumed, 1u);
  EXPECT_EQ(resumed.shards_resumed + resumed.shards_written, resumed.total_shards);
  EXPECT_EQ(directory_contents(scratch.path() / "reference"), directory_contents(output));
  for (const auto& entry : std::filesystem::directory_iterator(output))
    EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos);
}

TEST(Executor, RedoesAShardTheJobFileClaimsButTheDiskLacks) {
  auto source = Checkpoint::open(kModel);
  auto planned = plan_for(source, kCastRecipe);
  ScratchDirectory scratch("executor-missing");
  const auto output = scratch.path() / "out";
  execute_plan(planned.plan, options_for(output, 2'000'000));
  const auto before = directory_contents(output);
  std::filesystem::remove(output / shard_file_name(1, Checkpoint::open(output).shards().size()));
  auto again = options_for(output, 2'000'000);
  again.resume = true;
  auto report = execute_plan(planned.plan, again);
  EXPECT_EQ(report.shards_written, 1u);
  EXPECT_EQ(directory_contents(output), before);
}

TEST(Executor, RefusesToResumeADifferentJob) {
  auto source = Checkpoint::open(kModel);
  ScratchDirectory scratch("executor-fingerprint");
  const auto output = scratch.path() / "out";
  execute_plan(plan_for(source, kCastRecipe).plan, options_for(output, 2'000'000));
  auto other = options_for(output, 2'000'000);
  other.resume = true;
  other.fingerprint = "another recipe";
  EXPECT_EQ(
      testing::error_kind_of([&] { execute_plan(plan_for(source, kCastRecipe).plan, other); }),
      "job.fingerprint_mismatch");
}

}  // namespace
}  // namespace qs
