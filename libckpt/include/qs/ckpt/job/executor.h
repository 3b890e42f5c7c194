#pragma once
// The streaming executor: runs any Plan into a sharded safetensors checkpoint.
//
//   reader thread ──(bounded by max_buffer_bytes)──▶ transforms ──▶ writer thread
//
// The reader preads each item's sources into buffers; an item is admitted only while the
// bytes in flight (sources + outputs of every admitted, unwritten item) stay within the
// budget, so peak memory is set by the budget, not by the model (an item larger than the
// budget runs alone). Byte copies stream in chunks and never need a whole tensor in memory.
// Transforms run on the calling thread and parallelise inside (oneTBB over rows, or the GPU).
// The writer fills size-capped shards in plan order; each shard is committed atomically
// (temp file + fsync + rename) and recorded in the job file with its xxh3-128 digest (hashed
// as it is written); the configs, the manifest of every file's digest
// (quantsmith-manifest.json) and the index are written last.
//
// The output directory follows the one output policy (output_directory.h): checked and locked
// before anything is written, --resume / --force decided before anything is deleted.
// Units of work are output shards. After a kill (at any point), run again with resume: shards
// the job file lists as done are kept when their size and digest still match, stale temp
// files are removed, and the rest is redone;
// transforms are deterministic, so the result is byte-identical to an uninterrupted run.
// A stop request (Ctrl-C) finishes the shard being written and returns with `interrupted`.

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "qs/ckpt/job/non_finite_tally.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/plan/plan.h"

namespace qs {

struct ExecutionProgress {
  std::uint64_t done_source_bytes = 0;
  std::uint64_t total_source_bytes = 0;
  std::size_t done_items = 0;
  std::size_t total_items = 0;
  std::size_t done_shards = 0;
  std::size_t total_shards = 0;
};

struct ExecutionOptions {
  std::filesystem::path output_directory;
  std::uint64_t max_shard_bytes = 5'000'000'000;
  std::uint64_t max_buffer_bytes = 1ull << 30;
  // Continue a job whose job file is in output_directory. Without it the directory must be
  // empty or absent.
  bool resume = false;
  // Remove what an earlier job of ours left in output_directory first (only what its job file
  // records; anything else refuses the run with nothing removed).
  bool force = false;
  // A multi-stage job that already claimed output_directory (and holds its lock) for all its
  // stages: the executor neither checks nor locks it again, and resumes a job file it finds.
  const OutputDirectory* claimed_output = nullptr;
  // Whether the sources' modification times are part of the fingerprint. Off when the sources
  // are an earlier stage's output, rewritten by every run: the caller's fingerprint then
  // identifies them by that stage's own fingerprint.
  bool fingerprint_source_times = true;
  // Describes everything that decides the output bytes besides the plan itself (recipe text,
  // flags, tool version); a resume with a different fingerprint is refused.
  std::string fingerprint;
  // Small files written after the last shard, before the index (config.json, ...).
  std::vector<std::pair<std::string, std::string>> extra_files;
  std::function<void(const ExecutionProgress&)> on_progress;
  // NaN / Inf in any tensor read: reported, or an error naming it (non_finite_tally.h).
  NonFinitePolicy non_finite = NonFinitePolicy::Report;
  // Checked after every committed shard; when set, the run stops there.
  const std::atomic<bool>* stop_requested = nullptr;
  // Called (from the reader thread, in plan order) for each item that will not run because an
  // earlier run committed all its outputs: a job that follows its items as they run (the
  // layer-pipelined quantize) learns which ones it must take from the committed shards.
  std::function<void(std::size_t item)> on_item_skipped;
};

struct ExecutionReport {
  bool interrupted = false;
  std::size_t shards_written = 0;  // by this run
  std::size_t shards_resumed = 0;  // found done from an earlier run
  // "FILE: why" for each shard an earlier run committed that had to be written again (its
  // size or digest no longer matched the job file).
  std::vector<std::string> redone_shards;
  std::size_t total_shards = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  double seconds = 0.0;
  double write_seconds = 0.0;  // in the writer thread, writing and committing shards
  std::vector<TensorQuality> quality;  // from the transforms, in plan order
  // Tensors read by this run that hold NaN or Inf (quantized weights too), in plan order.
  std::vector<NonFiniteCount> non_finite;
};

// Throws BadInput "output.not_empty" when the directory holds files and resume is off (and,
// with force, when some are not ours), "output.locked" when another job writes it,
// "output.not_a_directory" / "output.dangling_link" / "output.symlink_loop" for a path that
// cannot be one, "job.fingerprint_mismatch" / "job.invalid" when resuming a different or
// damaged job; Io errors (disk full, permission) leave committed shards in place for a later
// resume.
ExecutionReport execute_plan(const Plan& plan, const ExecutionOptions& options);

// A stable 128-bit hex digest of the plan's sources (file names, sizes, modification times
// unless `source_times` is off, tensor offsets), transforms and outputs, plus `extra` (what
// the caller adds to the fingerprint).
std::string plan_fingerprint(const Plan& plan, std::string_view extra, bool source_times = true);

}  // namespace qs
