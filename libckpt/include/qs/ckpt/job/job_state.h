#pragma once
// The job file of a streaming run (exllamav3-style): the files the job writes (so --force
// removes exactly those), which output shards are committed with the xxh3-128 digest of each,
// and a fingerprint of everything that decides the output bytes. It is rewritten atomically
// after every committed shard, so after a kill it never claims a shard that is not on disk;
// its content depends only on the job, never on time, process or temporary names, so two
// identical runs leave identical job files.
//
// A part of a partitioned job (partition.h) keeps a job file of its own, which also names the
// partition and the shards assigned to it; it commits only those. Finalizing the job writes
// the single-process job file, finished, from the parts' records (partitioned_job.h).

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/job/partition.h"

namespace qs {

// The shards one part of a partitioned job writes (ascending).
struct PartAssignment {
  Partition partition;
  std::vector<std::size_t> shards;
};

// A part's job file as finalize reads it.
struct PartRecord {
  std::string file;  // its name in OUT
  std::string fingerprint;
  Partition partition;
  std::size_t shard_count = 0;
  std::vector<std::size_t> assigned;
  std::vector<std::pair<std::size_t, std::string>> committed;  // shard, xxh3-128
};

class JobState {
 public:
  // Reads the job file in `directory`, or starts a new one when there is none. A job file
  // with another fingerprint or shard count is refused ("job.fingerprint_mismatch"), a
  // damaged one too ("job.invalid"). A shard listed as done whose file is missing, has the
  // wrong size or another digest than the one recorded at commit counts as not done, and is
  // named in discarded_shards(). `files`: every file name the job writes besides the job file.
  static JobState open_or_create(const std::filesystem::path& directory,
                                 const std::string& fingerprint,
                                 const std::vector<std::vector<TensorSpec>>& shard_plan,
                                 const std::vector<std::string>& files,
                                 const PartAssignment* part = nullptr);

  // Part job file `name` in `directory`; "job.invalid" names it when damaged.
  static PartRecord read_part(const std::filesystem::path& directory, const std::string& name);

  // The job file of the finished single-process job: what open_or_create and mark_finished
  // would have written after committing every shard with these digests.
  static void write_finished(const std::filesystem::path& directory,
                             const std::string& fingerprint, const std::vector<std::string>& files,
                             const std::vector<std::string>& shard_files,
                             const std::vector<std::uint64_t>& shard_bytes,
                             const std::vector<std::string>& digests);

  // The file names the job file in `directory` records as the job's own (the job file itself
  // included), or nullopt when there is no job file. Throws "job.invalid" for a damaged one.
  static std::optional<std::vector<std::string>> recorded_files(
      const std::filesystem::path& directory);

  bool shard_done(std::size_t shard) const { return !digests_[shard].empty(); }
  const std::string& shard_digest(std::size_t shard) const { return digests_[shard]; }
  std::size_t done_shard_count() const;
  // Whether this job writes `shard` (every shard, unless it is a part of a partitioned job).
  bool owns(std::size_t shard) const { return owned_[shard]; }
  std::size_t owned_shard_count() const;
  // Every shard it owns is committed.
  bool complete() const { return done_shard_count() == owned_shard_count(); }
  bool finished() const { return finished_; }
  // "FILE: why" for each shard the job file listed as done that is redone.
  const std::vector<std::string>& discarded_shards() const { return discarded_; }
  void mark_shard_done(std::size_t shard, std::string xxh3_128);
  void mark_finished();

 private:
  void save() const;

  std::filesystem::path path_;
  std::string fingerprint_;
  std::vector<std::string> files_;
  std::vector<std::string> shard_files_;
  std::vector<std::uint64_t> shard_bytes_;
  std::vector<std::string> digests_;  // empty: not committed
  std::vector<bool> owned_;
  std::optional<PartAssignment> part_;
  std::vector<std::string> discarded_;
  bool finished_ = false;
};

}  // namespace qs
