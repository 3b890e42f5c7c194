#pragma once
// The output side of a partitioned job (partition.h): how a worker claims the shared OUT,
// and finalize, which turns the committed parts into the checkpoint a single-process run
// writes (same shards, configs, manifest, index and job file, byte for byte).
//
// A worker claims OUT under a shared directory lock and holds its part's lock file, so any
// number of parts run at once while a single-process job, a second worker of the same part
// and finalize are kept out. Before writing, it refuses parts of another job in OUT
// ("job.fingerprint_mismatch": other inputs, recipe or options) or of another split
// ("job.partition_mismatch": another N), naming the file, and records the job's layout.
//
// Finalize takes the directory lock exclusively, so it runs only when no worker does. It
// checks every part's job file against the layout's fingerprint, that all N parts are there
// and committed every shard assigned to them, and that each shard has the size the plan
// gives; only then does it write the small files, the manifest, the index and the finished
// job file, and remove the parts' bookkeeping. Any refusal leaves every committed part as it
// was, so the missing worker can be rerun with --resume and finalize tried again. The worker
// that completes its part tries to finalize too: it succeeds when it is the last one.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

#include "qs/ckpt/job/job_state.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/job/output_layout.h"
#include "qs/ckpt/job/partition.h"

namespace qs {

// A worker's hold on OUT for one part; released when destroyed.
class PartClaim {
 public:
  // Throws "cli.partition_force" for Force (a worker may not remove what other parts wrote),
  // "output.not_empty" for a Fresh part that already ran here or an OUT with foreign entries,
  // "output.part_locked" when another worker runs the same part, "job.fingerprint_mismatch" /
  // "job.partition_mismatch" / "job.invalid" for the records of another or a damaged job.
  static PartClaim claim(const std::filesystem::path& directory, OutputMode mode,
                         const OutputLayout& layout, const Partition& partition);

  PartClaim(PartClaim&& other) noexcept;
  PartClaim& operator=(PartClaim&&) = delete;
  PartClaim(const PartClaim&) = delete;
  PartClaim& operator=(const PartClaim&) = delete;
  ~PartClaim();

  // The job in OUT is already finalized (resume only): there is nothing to do.
  bool already_finalized() const { return already_finalized_; }

 private:
  PartClaim(OutputDirectory directory, int part_lock, bool already_finalized)
      : directory_(std::move(directory)),
        part_lock_(part_lock),
        already_finalized_(already_finalized) {}

  OutputDirectory directory_;
  int part_lock_ = -1;
  bool already_finalized_ = false;
};

struct FinalizeReport {
  bool already_finalized = false;  // nothing was left to do
  std::size_t parts = 0;
  std::size_t shards = 0;
};

// `quantsmith finalize OUT`: throws "output.locked" while a worker runs, "finalize.no_job"
// when OUT holds no partitioned job, "finalize.part_missing" / "finalize.part_incomplete" /
// "finalize.shard_damaged" naming the part job file or shard, and the claim's
// "job.*_mismatch" errors for parts of another job, all before anything is written.
FinalizeReport finalize_partitioned_job(const std::filesystem::path& directory);

// A worker whose part is complete: finalizes when no other worker holds OUT and every part
// is complete; nullopt when it is not the last (another worker or finalize will do it).
std::optional<FinalizeReport> finalize_if_last(const std::filesystem::path& directory);

}  // namespace qs
