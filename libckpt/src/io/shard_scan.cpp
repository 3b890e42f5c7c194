#include "qs/ckpt/io/shard_scan.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <span>

#include "qs/ckpt/io/file_io.h"

namespace qs {
namespace {

struct Counts {
  std::uint64_t nan = 0;
  std::uint64_t inf = 0;
};

// Exponent-all-ones tests on the raw codes; no decoding needed. Formats without Inf (E4M3)
// only count NaN.
template <typename Code, Code kExponent, Code kMagnitude, bool kHasInf>
Counts count_non_finite(const std::byte* data, std::size_t elements) {
  // Nearly every block is all finite: a max-reduction (which vectorizes well) proves it, and
  // only blocks that fail it are counted element by element.
  Code largest = 0;
  for (std::size_t i = 0; i < elements; ++i) {
    Code code;
    std::memcpy(&code, data + i * sizeof(Code), sizeof(Code));
    largest = std::max<Code>(largest, code & kMagnitude);
  }
  if (largest < kExponent) return {};
  std::uint64_t non_finite = 0, inf = 0;
  for (std::size_t i = 0; i < elements; ++i) {
    Code code;
    std::memcpy(&code, data + i * sizeof(Code), sizeof(Code));
    Code magnitude = code & kMagnitude;
    non_finite += (magnitude & kExponent) == kExponent;
    if constexpr (kHasInf) inf += magnitude == kExponent;
  }
  return {non_finite - inf, inf};
}

using Counter = Counts (*)(const std::byte*, std::size_t);

// nullptr for dtypes that cannot hold non-finite values.
Counter counter_for(DType dtype) {
  switch (dtype) {
    case DType::BF16:
      return count_non_finite<std::uint16_t, 0x7F80, 0x7FFF, true>;
    case DType::F16:
      return count_non_finite<std::uint16_t, 0x7C00, 0x7FFF, true>;
    case DType::F32:
      return count_non_finite<std::uint32_t, 0x7F800000u, 0x7FFFFFFFu, true>;
    case DType::F64:
      return count_non_finite<std::uint64_t, 0x7FF0000000000000ull, 0x7FFFFFFFFFFFFFFFull, true>;
    case DType::F8_E4M3:
      return count_non_finite<std::uint8_t, 0x7F, 0x7F, false>;
    case DType::F8_E5M2:
      return count_non_finite<std::uint8_t, 0x7C, 0x7F, true>;
    default:
      return nullptr;
  }
}

}  // namespace

NonFiniteCount count_non_finite_values(DType dtype, std::span<const std::byte> bytes) {
  const Counter counter = counter_for(dtype);
  if (!counter) return {};
  const auto counts = counter(bytes.data(), bytes.size() * 8 / dtype_bits(dtype));
  return {{}, counts.nan, counts.inf};
}

namespace {

std::string hex_of(const XXH128_hash_t& digest) {
  return fmt::format("{:016x}{:016x}", digest.high64, digest.low64);
}

// Files are hashed in pieces of this size: large enough for full-speed reads, small enough
// to stay in cache.
constexpr std::size_t kHashPieceBytes = 1u << 20;

}  // namespace

std::string xxh3_128_hex(std::span<const std::byte> bytes) {
  return hex_of(XXH3_128bits(bytes.data(), bytes.size()));
}

std::string xxh3_128_hex(std::string_view text) {
  return hex_of(XXH3_128bits(text.data(), text.size()));
}

Xxh3Digest::Xxh3Digest() : state_(XXH3_createState()) {
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

Xxh3Digest::~Xxh3Digest() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Xxh3Digest::update(std::span<const std::byte> bytes) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), bytes.data(), bytes.size());
}

std::string Xxh3Digest::hex() const {
  return hex_of(XXH3_128bits_digest(static_cast<const XXH3_state_t*>(state_)));
}

std::string hash_file_xxh3_128(const std::filesystem::path& path, std::uint64_t* file_size) {
  ReadOnlyFile file(path);
  Xxh3Digest digest;
  std::vector<std::byte> piece(std::min<std::uint64_t>(kHashPieceBytes, file.size()));
  for (std::uint64_t offset = 0; offset < file.size(); offset += piece.size()) {
    const auto length = std::min<std::uint64_t>(piece.size(), file.size() - offset);
    const std::span<std::byte> part(piece.data(), length);
    file.read_at(offset, part);
    digest.update(part);
  }
  if (file_size) *file_size = file.size();
  return digest.hex();
}

ShardScan scan_shard(const SafetensorsFile& shard, const ScanOptions& options,
                     const std::function<void(std::uint64_t)>& on_progress) {
  const auto& header = shard.header();
  FileMapping mapping(shard.file());
  const std::uint64_t block = std::max<std::size_t>(8, options.block_bytes / 8 * 8);

  Xxh3Digest digest;
  // Every access to the mapped bytes is guarded: a file truncated by another process while we
  // read it throws "file.truncated" naming it instead of raising SIGBUS.
  mapping.read_guarded(0, header.data_start(),
                       [&digest](std::span<const std::byte> bytes) { digest.update(bytes); });

  ShardScan scan;
  std::uint64_t released = 0;
  auto advance = [&](std::uint64_t position) {
    if (position - released < options.release_bytes) return;
    mapping.release(released, position);
    released = position;
    if (on_progress) on_progress(position);
  };
  // Tensors tile the data section in offset order, so walking them hashes the file in order;
  // blocks are whole elements because tensors start on element boundaries of their own data.
  for (const auto& tensor : header.tensors) {
    Counter counter = counter_for(tensor.dtype);
    const std::uint64_t element = counter ? dtype_bits(tensor.dtype) / 8 : 1;
    Counts counts;
    std::uint64_t position = header.data_start() + tensor.begin;
    const std::uint64_t end = header.data_start() + tensor.end;
    while (position < end) {
      std::uint64_t length = std::min(block, end - position);
      Counts part;
      mapping.read_guarded(position, position + length, [&](std::span<const std::byte> bytes) {
        if (counter) part = counter(bytes.data(), bytes.size() / element);
        digest.update(bytes);
      });
      counts.nan += part.nan;
      counts.inf += part.inf;
      position += length;
      advance(position);
    }
    if (counts.nan || counts.inf) scan.non_finite.push_back({tensor.name, counts.nan, counts.inf});
  }
  mapping.release(released, shard.file_size());
  if (on_progress) on_progress(shard.file_size());

  scan.xxh3_128 = digest.hex();
  scan.bytes = shard.file_size();
  return scan;
}

}  // namespace qs
