// The executor with several transform workers (the scheduling a multi-GPU job uses, here on
// CPU threads): the output bytes do not depend on the worker count even when items finish out
// of order, the buffer budget still bounds the bytes in flight, the first failing item in plan
// order is the one reported, and a worker that cannot start fails the job before any read.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/plan/recipe.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::directory_contents;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();

// What the wrapped transforms of one run saw: how many ran, and the most bytes (sources plus
// outputs, as the executor reserves them) held by transforms running at the same time.
struct Observed {
  std::mutex mutex;
  std::uint64_t running_bytes = 0;
  std::uint64_t peak_running_bytes = 0;
  std::size_t runs = 0;
};

// A copy that is not a byte copy (so it goes through the workers, not the chunked path) and
// takes a different time per tensor, so that with several workers later items often finish
// before earlier ones. `fail` names output tensors whose transform throws, after `delay`.
class ShuffledCopy final : public Transform {
 public:
  ShuffledCopy(std::shared_ptr<Observed> observed, std::set<std::string> fail,
               std::chrono::milliseconds fail_delay)
      : observed_(std::move(observed)), fail_(std::move(fail)), fail_delay_(fail_delay) {}

  std::string describe() const override { return "shuffled-copy"; }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    std::uint64_t bytes = 0;
    for (const auto& source : sources) bytes += source.bytes.size();
    for (const auto& output : outputs) bytes += output.size();
    {
      std::lock_guard lock(observed_->mutex);
      observed_->running_bytes += bytes;
      observed_->peak_running_bytes =
          std::max(observed_->peak_running_bytes, observed_->running_bytes);
      ++observed_->runs;
    }
    const auto& name = sources[0].info->name;
    // 0 to 3 ms, decided by the name: the same on every run, different between neighbours.
    std::this_thread::sleep_for(std::chrono::microseconds(std::hash<std::string>{}(name) % 3000));
    const bool failing = fail_.contains(name);
    if (failing) std::this_thread::sleep_for(fail_delay_);
    {
      std::lock_guard lock(observed_->mutex);
      observed_->running_bytes -= bytes;
    }
    if (failing) throw_bad_input("test.transform_failed", "asked to fail", {}, name);
    std::copy(sources[0].bytes.begin(), sources[0].bytes.end(), outputs[0].begin());
    return {};
  }

 private:
  std::shared_ptr<Observed> observed_;
  std::set<std::string> fail_;
  std::chrono::milliseconds fail_delay_;
};

struct ShuffledPlan {
  QuantizePlan planned;
  std::shared_ptr<Observed> observed = std::make_shared<Observed>();
};

// Every tensor of the bundled model copied through ShuffledCopy.
ShuffledPlan shuffled_plan(const Checkpoint& source, std::set<std::string> fail = {},
                           std::chrono::milliseconds fail_delay = {}) {
  ShuffledPlan result;
  result.planned = plan_quantization(
      source, parse_recipe("rules:\n  - category: router\n    action: keep\n", "test"),
      [](const QuantizeRequest&) { return make_copy_transform(); });
  for (auto& item : result.planned.plan.items)
    item.transform = std::make_shared<ShuffledCopy>(result.observed, fail, fail_delay);
  return result;
}

ExecutionOptions options_for(const std::filesystem::path& output, std::size_t workers) {
  ExecutionOptions options;
  options.output_directory = output;
  options.max_shard_bytes = 3'000'000;
  options.fingerprint = "test";
  options.extra_files = {{"config.json", "{}\n"}};
  options.transform_workers = workers;
  return options;
}

TEST(ExecutorWorkers, OutputIsTheSameForAnyWorkerCount) {
  auto source = Checkpoint::open(kModel);
  ScratchDirectory scratch("executor-workers");
  std::map<std::string, std::string> one_worker;
  for (std::size_t workers : {1, 2, 4, 7}) {
    auto shuffled = shuffled_plan(source);
    const auto out = scratch.path() / ("w" + std::to_string(workers));
    std::vector<std::size_t> started;
    std::mutex started_mutex;
    auto options = options_for(out, workers);
    options.on_worker_start = [&](std::size_t worker) {
      std::lock_guard lock(started_mutex);
      started.push_back(worker);
    };
    const auto report = execute_plan(shuffled.planned.plan, options);
    EXPECT_EQ(shuffled.observed->runs, shuffled.planned.plan.items.size());
    std::sort(started.begin(), started.end());
    std::vector<std::size_t> every(workers);
    std::iota(every.begin(), every.end(), 0);
    EXPECT_EQ(started, every) << "each worker starts once, with its own index";
    EXPECT_GT(report.total_shards, 3u);
    if (workers == 1) {
      one_worker = directory_contents(out);
      EXPECT_GT(one_worker.size(), 4u);
    } else {
      EXPECT_EQ(directory_contents(out), one_worker) << workers << " workers";
    }
  }
}

TEST(ExecutorWorkers, TheBufferBudgetBoundsTheBytesInFlightAcrossWorkers) {
  auto source = Checkpoint::open(kModel);
  ScratchDirectory scratch("executor-workers-budget");
  auto shuffled = shuffled_plan(source);
  std::uint64_t largest = 0;
  for (const auto& item : shuffled.planned.plan.items)
    largest = std::max(largest, item.source_bytes() + item.output_bytes());
  auto options = options_for(scratch.path() / "out", 8);
  options.max_buffer_bytes = 600'000;
  ASSERT_GT(largest, 0u);
  execute_plan(shuffled.planned.plan, options);
  // An item larger than the budget runs alone; otherwise the running ones fit in it.
  EXPECT_LE(shuffled.observed->peak_running_bytes, std::max(largest, options.max_buffer_bytes));

  auto alone = shuffled_plan(source);
  auto one_at_a_time = options_for(scratch.path() / "alone", 8);
  one_at_a_time.max_buffer_bytes = 1;  // every item runs alone, whatever the worker count
  execute_plan(alone.planned.plan, one_at_a_time);
  EXPECT_EQ(alone.observed->peak_running_bytes, largest);
  EXPECT_EQ(directory_contents(scratch.path() / "alone"),
            directory_contents(scratch.path() / "out"));
}

TEST(ExecutorWorkers, TheFirstFailingItemInPlanOrderIsReported) {
  auto source = Checkpoint::open(kModel);
  const auto plan_items = shuffled_plan(source).planned.plan.items;
  ASSERT_GT(plan_items.size(), 20u);
  const std::string early = plan_items[5].sources[0].info->name;
  const std::string late = plan_items[9].sources[0].info->name;
  for (std::size_t workers : {1, 4}) {
    ScratchDirectory scratch("executor-workers-fail");
    // The earlier item fails long after the later one has: plan order still decides.
    auto shuffled = shuffled_plan(source, {early, late}, std::chrono::milliseconds(0));
    for (auto& item : shuffled.planned.plan.items)
      if (item.sources[0].info->name == early)
        item.transform = std::make_shared<ShuffledCopy>(shuffled.observed, std::set{early},
                                                        std::chrono::milliseconds(200));
    try {
      execute_plan(shuffled.planned.plan, options_for(scratch.path() / "out", workers));
      ADD_FAILURE() << "the job succeeded";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), "test.transform_failed");
      EXPECT_EQ(error.tensor(), early) << workers << " workers";
    }
  }
}

TEST(ExecutorWorkers, AWorkerThatCannotStartFailsTheJobBeforeAnyRead) {
  auto source = Checkpoint::open(kModel);
  ScratchDirectory scratch("executor-workers-start");
  auto shuffled = shuffled_plan(source);
  auto options = options_for(scratch.path() / "out", 3);
  options.on_worker_start = [](std::size_t worker) {
    if (worker == 2) throw_bad_input("device.not_found", "worker 2 has no device");
  };
  EXPECT_EQ(testing::error_kind_of([&] { execute_plan(shuffled.planned.plan, options); }),
            "device.not_found");
  EXPECT_EQ(shuffled.observed->runs, 0u);
  // The job file, made before the workers start, records nothing done; no shard was written.
  for (const auto& [name, bytes] : directory_contents(scratch.path() / "out"))
    if (name != "quantsmith-job.json") ADD_FAILURE() << "wrote " << name;
}

}  // namespace
}  // namespace qs
