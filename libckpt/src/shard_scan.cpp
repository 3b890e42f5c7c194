#include "qs/ckpt/shard_scan.h"

#include <tbb/parallel_pipeline.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include <fmt/format.h>

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
    case DType::BF16: return count_non_finite<std::uint16_t, 0x7F80, 0x7FFF, true>;
    case DType::F16: return count_non_finite<std::uint16_t, 0x7C00, 0x7FFF, true>;
    case DType::F32: return count_non_finite<std::uint32_t, 0x7F800000u, 0x7FFFFFFFu, true>;
    case DType::F64:
      return count_non_finite<std::uint64_t, 0x7FF0000000000000ull, 0x7FFFFFFFFFFFFFFFull, true>;
    case DType::F8_E4M3: return count_non_finite<std::uint8_t, 0x7F, 0x7F, false>;
    case DType::F8_E5M2: return count_non_finite<std::uint8_t, 0x7C, 0x7F, true>;
    default: return nullptr;
  }
}

struct Chunk {
  std::uint64_t offset = 0;  // in the file
  std::vector<std::byte> bytes;
};

}  // namespace

ShardScan scan_shard(const SafetensorsFile& shard, const ScanOptions& options,
                     const std::function<void(std::uint64_t)>& on_progress) {
  const auto& header = shard.header();
  const std::uint64_t file_size = shard.file_size();
  const std::uint64_t data_start = header.data_start();
  shard.file().advise_sequential();

  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> hash(XXH3_createState(),
                                                               &XXH3_freeState);
  XXH3_128bits_reset(hash.get());

  std::mutex counts_mutex;
  std::map<std::size_t, Counts> counts;  // by tensor index
  // Elements cut by a chunk boundary are checked afterwards from their own bytes.
  std::vector<std::pair<std::size_t, std::uint64_t>> straddling;  // tensor, element offset

  std::uint64_t next_offset = 0;
  std::uint64_t done = 0;
  std::vector<std::unique_ptr<Chunk>> pool;
  for (std::size_t i = 0; i < options.chunks_in_flight; ++i) pool.push_back(std::make_unique<Chunk>());
  std::mutex pool_mutex;

  tbb::parallel_pipeline(
      options.chunks_in_flight,
      tbb::make_filter<void, Chunk*>(
          tbb::filter_mode::serial_in_order,
          [&](tbb::flow_control& control) -> Chunk* {
            if (next_offset >= file_size) {
              control.stop();
              return nullptr;
            }
            Chunk* chunk;
            {
              std::lock_guard lock(pool_mutex);
              chunk = pool.back().release();
              pool.pop_back();
            }
            // Chunks after the first start on the data section's grid so most elements fit.
            std::uint64_t end = next_offset < data_start
                                    ? std::min(file_size, data_start)
                                    : std::min(file_size, next_offset + options.chunk_bytes);
            chunk->offset = next_offset;
            chunk->bytes.resize(end - next_offset);
            shard.file().read_at(next_offset, chunk->bytes);
            next_offset = end;
            return chunk;
          }) &
          tbb::make_filter<Chunk*, Chunk*>(
              tbb::filter_mode::parallel,
              [&](Chunk* chunk) -> Chunk* {
                std::uint64_t chunk_begin = chunk->offset;
                std::uint64_t chunk_end = chunk->offset + chunk->bytes.size();
                std::map<std::size_t, Counts> local;
                std::vector<std::pair<std::size_t, std::uint64_t>> local_straddling;
                auto first = std::partition_point(
                    header.tensors.begin(), header.tensors.end(),
                    [&](const TensorInfo& t) { return data_start + t.end <= chunk_begin; });
                for (auto it = first; it != header.tensors.end() && data_start + it->begin < chunk_end; ++it) {
                  Counter counter = counter_for(it->dtype);
                  if (!counter || it->byte_size() == 0) continue;
                  std::uint64_t element = dtype_bits(it->dtype) / 8;
                  std::uint64_t tensor_begin = data_start + it->begin;
                  std::uint64_t lo = std::max(chunk_begin, tensor_begin);
                  std::uint64_t hi = std::min(chunk_end, data_start + it->end);
                  // Whole elements inside [lo, hi); a partial one at either end is deferred.
                  std::uint64_t first_element = (lo - tensor_begin + element - 1) / element;
                  std::uint64_t end_element = (hi - tensor_begin) / element;
                  // An element cut at `lo` is recorded by the one chunk holding its last byte.
                  if ((lo - tensor_begin) % element != 0 &&
                      tensor_begin + first_element * element <= hi)
                    local_straddling.emplace_back(it - header.tensors.begin(), first_element - 1);
                  if (end_element < first_element) continue;
                  auto result = counter(chunk->bytes.data() + (tensor_begin + first_element * element - chunk_begin),
                                        end_element - first_element);
                  if (result.nan || result.inf) {
                    local[it - header.tensors.begin()].nan += result.nan;
                    local[it - header.tensors.begin()].inf += result.inf;
                  }
                }
                if (!local.empty() || !local_straddling.empty()) {
                  std::lock_guard lock(counts_mutex);
                  for (const auto& [index, c] : local) {
                    counts[index].nan += c.nan;
                    counts[index].inf += c.inf;
                  }
                  straddling.insert(straddling.end(), local_straddling.begin(), local_straddling.end());
                }
                return chunk;
              }) &
          tbb::make_filter<Chunk*, void>(tbb::filter_mode::serial_in_order, [&](Chunk* chunk) {
            XXH3_128bits_update(hash.get(), chunk->bytes.data(), chunk->bytes.size());
            done += chunk->bytes.size();
            if (on_progress) on_progress(done);
            std::lock_guard lock(pool_mutex);
            pool.emplace_back(chunk);
          }));

  for (const auto& [index, element_index] : straddling) {
    const auto& tensor = header.tensors[index];
    std::uint64_t element = dtype_bits(tensor.dtype) / 8;
    std::byte bytes[8];
    shard.file().read_at(data_start + tensor.begin + element_index * element,
                         std::span(bytes, element));
    auto result = counter_for(tensor.dtype)(bytes, 1);
    counts[index].nan += result.nan;
    counts[index].inf += result.inf;
  }

  ShardScan scan;
  XXH128_hash_t digest = XXH3_128bits_digest(hash.get());
  scan.xxh3_128 = fmt::format("{:016x}{:016x}", digest.high64, digest.low64);
  scan.bytes = done;
  for (const auto& [index, c] : counts)
    if (c.nan || c.inf) scan.non_finite.push_back({header.tensors[index].name, c.nan, c.inf});
  return scan;
}

}  // namespace qs
