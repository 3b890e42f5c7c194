#pragma once
// What a job writes besides its shards' bytes, known from the plan before the first byte: the
// shard files and their sizes, the small files (configs), the index, and the list of every
// file (what --force may remove). A single-process run finishes its output from it directly;
// a partitioned job's workers each record it (quantsmith-partition.json) so that finalize,
// which has no plan, writes the very same files.

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

namespace qs {

struct OutputLayout {
  std::string fingerprint;  // of the whole job (plan_fingerprint)
  std::vector<std::string> shard_files;
  std::vector<std::uint64_t> shard_bytes;  // whole files, header included
  // Written after the last shard, before the manifest and the index (config.json, ...).
  std::vector<std::pair<std::string, std::string>> small_files;
  std::string index;  // the index's text; empty for a single-file checkpoint
  // Every file the job writes besides its job file: shards, small files, manifest, index.
  std::vector<std::string> files;

  bool operator==(const OutputLayout&) const = default;
};

// Every shard's header metadata (what transformers writes).
const StringMap& output_shard_metadata();

OutputLayout make_output_layout(std::string fingerprint,
                                const std::vector<std::vector<TensorSpec>>& shard_plan,
                                std::vector<std::pair<std::string, std::string>> small_files);

// Once every shard is committed, with `digests` (xxh3-128 per shard, in order): the small
// files, the manifest, then the index, each atomically. The index goes last: a directory with
// an index is a complete checkpoint. The caller then marks its job file finished.
void write_completed_output(const std::filesystem::path& directory, const OutputLayout& layout,
                            const std::vector<std::string>& digests);

// The record in a partitioned job's OUT; BadInput `kind` names `file` when it is damaged.
nlohmann::ordered_json output_layout_json(const OutputLayout& layout);
OutputLayout output_layout_from_json(const nlohmann::json& json, const std::string& kind,
                                     const std::string& file);

}  // namespace qs
