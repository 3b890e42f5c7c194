#pragma once
// Reads every byte of a shard once: a hash of the whole file and a count of non-finite values
// per floating-point tensor. The file is memory-mapped and walked tensor by tensor in small
// blocks that stay in cache while they are scanned and hashed; pages already seen are
// released, so memory stays bounded whatever the file size. A file that shrinks while it is
// scanned (truncated by another process) throws BadInput "file.truncated" naming it.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

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

// NaN and Inf among `bytes`, whole elements of `dtype` (a tensor or a piece of one); zero for
// dtypes that cannot hold them. `tensor` is left empty.
NonFiniteCount count_non_finite_values(DType dtype, std::span<const std::byte> bytes);

// `on_progress` receives the bytes of this shard done so far.
ShardScan scan_shard(const SafetensorsFile& shard, const ScanOptions& options = {},
                     const std::function<void(std::uint64_t)>& on_progress = {});

}  // namespace qs

namespace qs {

// The xxh3-128 digest of `bytes`, as `xxh128sum` prints it (32 hex digits).
std::string xxh3_128_hex(std::span<const std::byte> bytes);
std::string xxh3_128_hex(std::string_view text);

// Streams an incrementally hashed file: what a writer feeds it, in order, then hex().
class Xxh3Digest {
 public:
  Xxh3Digest();
  ~Xxh3Digest();
  Xxh3Digest(const Xxh3Digest&) = delete;
  Xxh3Digest& operator=(const Xxh3Digest&) = delete;
  void update(std::span<const std::byte> bytes);
  std::string hex() const;

 private:
  void* state_;  // XXH3_state_t, kept out of this header
};

// The xxh3-128 digest of a whole file, read with pread in pieces (no mapping: a file that
// shrinks while it is read is an error naming it, not a signal). `file_size` is set to the
// bytes hashed.
std::string hash_file_xxh3_128(const std::filesystem::path& path,
                               std::uint64_t* file_size = nullptr);

}  // namespace qs
