#pragma once
// A job split into N parts run by N workers (`--partition I/N`): every worker computes the
// same plan and the same shard plan, and writes only the output shards assigned to its part.
// The split is deterministic and contiguous (part 0 gets the first shards in plan order, so
// each worker reads one stretch of the source), with the cut points placed so that every part
// carries about the same estimated cost: bytes read and written, plus the arithmetic of the
// items that solve something (GPTQ's rows·cols², Transform::extra_cost).
//
// Bookkeeping in OUT while the parts run, all removed when the job is finalized:
//   quantsmith-job.part-I-of-N.json   part I's job file: its shards and their digests
//   quantsmith-job.part-I-of-N.lock   held (flock) by the worker running part I
//   quantsmith-partition.json         what finalize writes besides the shards (index, configs,
//                                     shard sizes), identical from every worker
// Finalizing (partitioned_job.h) turns them into the single-process job's own files.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/plan/plan.h"

namespace qs {

struct Partition {
  std::size_t index = 0;  // 0 ≤ index < count (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX)
  std::size_t count = 1;

  bool operator==(const Partition&) const = default;
};

// "I/N" → {I, N}. BadInput "cli.bad_partition" for anything else: N = 0, I ≥ N, signs,
// spaces, missing parts, numbers past 1,000,000.
Partition parse_partition(std::string_view text);

// "2/4", as parse_partition reads it.
std::string partition_label(const Partition& partition);

// Part I's job file, lock file, and the record every part writes.
std::string part_job_file_name(const Partition& partition);
std::string part_lock_file_name(const Partition& partition);
inline constexpr std::string_view kPartitionRecordFileName = "quantsmith-partition.json";

// The partition a name of part_job_file_name / part_lock_file_name stands for, or {0, 0}
// when `name` is neither (count 0 never names a part).
Partition partition_of_job_file(std::string_view name);
Partition partition_of_lock_file(std::string_view name);

// The estimated cost of every output shard: each item's cost (bytes read and written plus
// its transform's extra_cost) spread over the shards holding its outputs, by output bytes.
std::vector<std::uint64_t> shard_costs(const Plan& plan,
                                       const std::vector<std::vector<TensorSpec>>& shard_plan);

// The part of every shard: contiguous runs, cut where the running cost crosses k/N of the
// total (a shard belongs to the part its cost midpoint falls in). Integer arithmetic only, so
// every worker computes the same split. Parts may be empty when there are fewer shards than
// parts.
std::vector<std::size_t> assign_shards(const std::vector<std::uint64_t>& costs, std::size_t parts);

// What part `partition` of `plan` writes, as --dry-run shows it: its shards (contiguous, by
// 0-based index) and their share of the whole job's bytes and estimated cost.
struct PartShare {
  std::size_t first_shard = 0;
  std::size_t shards = 0;
  std::size_t total_shards = 0;
  std::uint64_t output_bytes = 0;
  std::uint64_t total_output_bytes = 0;
  std::uint64_t cost = 0;
  std::uint64_t total_cost = 0;
};
PartShare part_share(const Plan& plan, std::uint64_t max_shard_bytes, const Partition& partition);

}  // namespace qs
