#pragma once
// The job file of a streaming run (exllamav3-style): which output shards are committed, and
// a fingerprint of everything that decides the output bytes. It is rewritten atomically after
// every committed shard, so after a kill it never claims a shard that is not on disk.

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "qs/ckpt/safetensors.h"

namespace qs {

class JobState {
 public:
  // Reads the job file in `directory`, or starts a new one when there is none. A job file
  // with another fingerprint or shard count is refused ("job.fingerprint_mismatch"), a
  // damaged one too ("job.invalid"). A shard listed as done whose file is missing or has the
  // wrong size counts as not done.
  static JobState open_or_create(const std::filesystem::path& directory,
                                 const std::string& fingerprint,
                                 const std::vector<std::vector<TensorSpec>>& shard_plan);

  bool shard_done(std::size_t shard) const { return done_[shard]; }
  std::size_t done_shard_count() const;
  bool finished() const { return finished_; }
  void mark_shard_done(std::size_t shard);
  void mark_finished();

 private:
  void save() const;

  std::filesystem::path path_;
  std::string fingerprint_;
  std::vector<bool> done_;
  bool finished_ = false;
};

}  // namespace qs
