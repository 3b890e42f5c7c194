#pragma once
// The job file of a streaming run (exllamav3-style): the files the job writes (so --force
// removes exactly those), which output shards are committed with the xxh3-128 digest of each,
// and a fingerprint of everything that decides the output bytes. It is rewritten atomically
// after every committed shard, so after a kill it never claims a shard that is not on disk;
// its content depends only on the job, never on time, process or temporary names, so two
// identical runs leave identical job files.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

namespace qs {

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
                                 const std::vector<std::string>& files);

  // The file names the job file in `directory` records as the job's own (the job file itself
  // included), or nullopt when there is no job file. Throws "job.invalid" for a damaged one.
  static std::optional<std::vector<std::string>> recorded_files(
      const std::filesystem::path& directory);

  bool shard_done(std::size_t shard) const { return !digests_[shard].empty(); }
  const std::string& shard_digest(std::size_t shard) const { return digests_[shard]; }
  std::size_t done_shard_count() const;
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
  std::vector<std::string> discarded_;
  bool finished_ = false;
};

}  // namespace qs
