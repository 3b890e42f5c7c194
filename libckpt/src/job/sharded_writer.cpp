#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/output_directory.h"

namespace qs {

std::vector<std::vector<TensorSpec>> split_into_shards(const std::vector<TensorSpec>& tensors,
                                                       std::uint64_t max_shard_bytes) {
  std::vector<std::vector<TensorSpec>> shards;
  std::uint64_t current_bytes = 0;
  for (const auto& tensor : tensors) {
    std::uint64_t size = tensor.byte_size();
    if (shards.empty() || (!shards.back().empty() && current_bytes + size > max_shard_bytes)) {
      shards.emplace_back();
      current_bytes = 0;
    }
    shards.back().push_back(tensor);
    current_bytes += size;
  }
  return shards;
}

std::string checkpoint_index_text(const std::vector<std::vector<TensorSpec>>& shard_plan) {
  nlohmann::json index;
  std::uint64_t total_size = 0;
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard)
    for (const auto& tensor : shard_plan[shard]) {
      total_size += tensor.byte_size();
      weight_map[tensor.name] = shard_file_name(shard, shard_plan.size());
    }
  index["metadata"]["total_size"] = total_size;
  index["weight_map"] = std::move(weight_map);
  return index.dump(2) + "\n";
}

void write_checkpoint_index(const std::filesystem::path& directory,
                            const std::vector<std::vector<TensorSpec>>& shard_plan) {
  write_file_atomically(directory / kIndexFileName, checkpoint_index_text(shard_plan));
}

std::string shard_file_name(std::size_t shard_index, std::size_t shard_count) {
  if (shard_count == 1) return std::string(kSingleFileName);
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", shard_index + 1, shard_count);
}

ShardedCheckpointWriter::ShardedCheckpointWriter(std::filesystem::path output_directory,
                                                 std::vector<TensorSpec> tensors,
                                                 std::uint64_t max_shard_bytes,
                                                 StringMap shard_metadata)
    : ShardedCheckpointWriter(std::move(output_directory),
                              split_into_shards(tensors, max_shard_bytes),
                              std::move(shard_metadata)) {}

ShardedCheckpointWriter::ShardedCheckpointWriter(std::filesystem::path output_directory,
                                                 std::vector<std::vector<TensorSpec>> shard_plan,
                                                 StringMap shard_metadata)
    : output_directory_(std::move(output_directory)),
      plan_(std::move(shard_plan)),
      shard_metadata_(std::move(shard_metadata)) {
  std::error_code error;
  std::filesystem::create_directories(output_directory_, error);
  if (error) throw_output_error(error, "create", output_directory_);
  if (plan_.empty()) plan_.emplace_back();  // an empty model still gets its one file
  open_next_shard();
}

void ShardedCheckpointWriter::open_next_shard() {
  writer_ = std::make_unique<SafetensorsWriter>(
      output_directory_ / shard_file_name(shard_, plan_.size()), plan_[shard_], shard_metadata_);
}

void ShardedCheckpointWriter::commit_shard_if_complete() {
  while (writer_ && writer_->next_tensor().empty()) {
    writer_->commit();
    writer_.reset();
    if (++shard_ < plan_.size()) open_next_shard();
  }
}

void ShardedCheckpointWriter::write_tensor(std::string_view name,
                                           std::span<const std::byte> bytes) {
  if (!writer_)
    throw Error(ErrorClass::Internal, "checkpoint.write_overrun", "all tensors already written",
                output_directory_.string(), std::string(name));
  writer_->write_tensor(name, bytes);
  commit_shard_if_complete();
}

void ShardedCheckpointWriter::write(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    if (!writer_)
      throw Error(ErrorClass::Internal, "checkpoint.write_overrun", "all tensors already written",
                  output_directory_.string());
    std::uint64_t room = writer_->remaining_bytes();
    auto piece = bytes.first(std::min<std::uint64_t>(room, bytes.size()));
    writer_->write(piece);
    bytes = bytes.subspan(piece.size());
    commit_shard_if_complete();
  }
}

std::string_view ShardedCheckpointWriter::next_tensor() const {
  return writer_ ? writer_->next_tensor() : std::string_view();
}

void ShardedCheckpointWriter::finish() {
  commit_shard_if_complete();
  if (writer_)
    throw Error(ErrorClass::Internal, "checkpoint.write_incomplete",
                "finished before every tensor was written", output_directory_.string(),
                std::string(writer_->next_tensor()));
  if (plan_.size() == 1) return;
  // The index goes last: a directory with an index is a complete checkpoint.
  write_checkpoint_index(output_directory_, plan_);
}

}  // namespace qs
