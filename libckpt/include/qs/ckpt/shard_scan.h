#pragma once
// Reads every byte of a shard once: a hash of the whole file and a count of non-finite values
// per floating-point tensor. The file is memory-mapped and walked tensor by tensor in small
// blocks that stay in cache while they are scanned and hashed; pages already seen are
// released, so memory stays bounded whatever the file size. A file that shrinks while it is
// scanned (truncated by another process) throws BadInput "file.truncated" naming it.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qs/ckpt/safetensors.h"

namespace qs {

struct NonFiniteCount {
  std::string tensor;
  std::uint64_t nan = 0;
  std::uint64_t inf = 0;
};

struct ShardScan {
  std::string xxh3_128;  // hex digest of the whole file, as `xxh128sum` prints it
  std::uint64_t bytes = 0;
  std::vector<NonFiniteCount> non_finite;  // only tensors with at least one NaN or Inf
};

struct ScanOptions {
  // Hashed and scanned together while in cache (a multiple of 8 keeps elements whole).
  std::size_t block_bytes = 256u << 10;
  // Mapped pages are released and progress reported after every this many bytes.
  std::size_t release_bytes = 64u << 20;
};

// `on_progress` receives the bytes of this shard done so far.
ShardScan scan_shard(const SafetensorsFile& shard, const ScanOptions& options = {},
                     const std::function<void(std::uint64_t)>& on_progress = {});

}  // namespace qs
