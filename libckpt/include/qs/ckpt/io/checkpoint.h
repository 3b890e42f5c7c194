#pragma once
// A checkpoint directory: one model.safetensors, or N shards described by
// model.safetensors.index.json, plus config and tokenizer files that travel with it.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

namespace qs {

inline constexpr std::string_view kSingleFileName = "model.safetensors";
inline constexpr std::string_view kIndexFileName = "model.safetensors.index.json";
// The bookkeeping our writing jobs leave beside the shards (job/job_state.h writes the job
// file, job/output_manifest.h the manifest). Named here, with the checkpoint's own files, so
// whoever reads a checkpoint can tell them from the model's files without knowing the jobs.
inline constexpr std::string_view kJobFileName = "quantsmith-job.json";
inline constexpr std::string_view kManifestFileName = "quantsmith-manifest.json";

// One tensor of a checkpoint: which shard holds it and its header entry.
struct TensorLocation {
  const SafetensorsFile* shard;
  const TensorInfo* info;
};

class Checkpoint {
 public:
  // `path` is a directory, or a single .safetensors file. Opening reads and validates every
  // header and the index (every entry present in its shard, no tensor outside the index, no
  // name in two shards); a violation throws naming the file and tensor. No tensor data is read.
  static Checkpoint open(const std::filesystem::path& path);

  const std::filesystem::path& directory() const { return directory_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  // Every tensor, in shard order then data-offset order (a deterministic order).
  const std::vector<TensorLocation>& tensors() const { return tensors_; }
  std::optional<TensorLocation> find(std::string_view name) const;
  const TensorLocation& at(std::string_view name) const;  // throws naming the tensor

  bool has_index() const { return index_.has_value(); }
  const nlohmann::json& index() const { return *index_; }
  // config.json, or a null json when the checkpoint has none.
  const nlohmann::json& config() const { return config_; }
  std::uint64_t tensor_bytes() const;  // sum of tensor data sizes
  std::uint64_t file_bytes() const;    // sum of shard file sizes
  // Non-weight files that belong with the checkpoint (config, tokenizer, chat template, ...).
  std::vector<std::filesystem::path> auxiliary_files() const;

 private:
  std::filesystem::path directory_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<TensorLocation> tensors_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
  std::optional<nlohmann::json> index_;
  nlohmann::json config_;
};

// Copies the auxiliary files of `source` into `output_directory` (atomically each).
void copy_auxiliary_files(const Checkpoint& source, const std::filesystem::path& output_directory);

// Assigns tensors, in order, to shards of at most `max_shard_bytes` tensor bytes (a tensor
// larger than the cap gets a shard of its own), the way huggingface_hub splits state dicts.
std::vector<std::vector<TensorSpec>> split_into_shards(const std::vector<TensorSpec>& tensors,
                                                       std::uint64_t max_shard_bytes);
// "model-00002-of-00005.safetensors", or "model.safetensors" when there is one shard.
std::string shard_file_name(std::size_t shard_index, std::size_t shard_count);

// model.safetensors.index.json for the given shard assignment (total_size and weight_map):
// its text, and the file written atomically.
std::string checkpoint_index_text(const std::vector<std::vector<TensorSpec>>& shard_plan);
void write_checkpoint_index(const std::filesystem::path& directory,
                            const std::vector<std::vector<TensorSpec>>& shard_plan);

// Writes a checkpoint whose full tensor list is known up front: size-capped shards, each
// committed atomically as it completes, and the index last (only for more than one shard).
class ShardedCheckpointWriter {
 public:
  ShardedCheckpointWriter(std::filesystem::path output_directory, std::vector<TensorSpec> tensors,
                          std::uint64_t max_shard_bytes,
                          StringMap shard_metadata = {{"format", "pt"}});
  // With the shard assignment given explicitly (e.g. to reproduce an existing layout).
  ShardedCheckpointWriter(std::filesystem::path output_directory,
                          std::vector<std::vector<TensorSpec>> shard_plan,
                          StringMap shard_metadata = {{"format", "pt"}});

  const std::vector<std::vector<TensorSpec>>& shard_plan() const { return plan_; }
  // Whole tensors, in the order given to the constructor.
  void write_tensor(std::string_view name, std::span<const std::byte> bytes);
  // Pieces of the current tensor, in order (for tensors produced in chunks).
  void write(std::span<const std::byte> bytes);
  std::string_view next_tensor() const;
  // Commits the last shard and writes the index; throws if any tensor is missing.
  void finish();

 private:
  void open_next_shard();
  void commit_shard_if_complete();

  std::filesystem::path output_directory_;
  std::vector<std::vector<TensorSpec>> plan_;
  StringMap shard_metadata_;
  std::size_t shard_ = 0;
  std::unique_ptr<SafetensorsWriter> writer_;
  std::uint64_t total_tensor_bytes_ = 0;
};

}  // namespace qs
