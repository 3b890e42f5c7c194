#pragma once
// Reads every byte of a shard once: a hash of the whole file and a count of non-finite values
// per floating-point tensor. Memory is a few fixed-size buffers whatever the file size.

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
  std::size_t chunk_bytes = 16u << 20;
  std::size_t chunks_in_flight = 6;  // bounds memory at chunk_bytes × chunks_in_flight
};

// `on_progress` receives bytes read so far (called from one thread at a time).
ShardScan scan_shard(const SafetensorsFile& shard, const ScanOptions& options = {},
                     const std::function<void(std::uint64_t)>& on_progress = {});

}  // namespace qs
