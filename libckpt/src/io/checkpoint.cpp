#include "qs/ckpt/io/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "qs/ckpt/io/config_numbers.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/json_input.h"

namespace qs {
namespace fs = std::filesystem;
namespace {

// Whether the directory holds an entry of that name, of any type: a FIFO, a dangling link or
// a link loop is then refused by ReadOnlyFile with the reason, not silently skipped as absent.
bool has_entry(const fs::path& path) {
  std::error_code error;
  return fs::exists(fs::symlink_status(path, error));
}

// Shard file names in the order they first appear in the index's weight_map (sorted by
// tensor name), which is also their numeric order for hub-style names.
std::vector<std::string> shard_names_from_index(const nlohmann::json& index,
                                                const fs::path& index_path) {
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw_bad_input("index.invalid", "has no \"weight_map\" object", index_path.string());
  std::set<std::string> names;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string())
      throw_bad_input("index.invalid", "weight_map value is not a file name", index_path.string(),
                      tensor);
    const auto& name = file.get_ref<const std::string&>();
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw_bad_input("index.invalid",
                      fmt::format("shard name \"{}\" is not a plain file name", name),
                      index_path.string(), tensor);
    names.insert(name);
  }
  return {names.begin(), names.end()};
}

}  // namespace

Checkpoint Checkpoint::open(const fs::path& path) {
  Checkpoint checkpoint;
  std::vector<std::string> shard_names;
  std::error_code error;
  if (fs::is_directory(path, error)) {
    checkpoint.directory_ = path;
    fs::path index_path = path / kIndexFileName;
    if (has_entry(index_path)) {
      checkpoint.index_ = read_json_file(index_path, "index.invalid_json");
      shard_names = shard_names_from_index(*checkpoint.index_, index_path);
    } else if (has_entry(path / kSingleFileName)) {
      shard_names.push_back(std::string(kSingleFileName));
    } else {
      throw_bad_input("checkpoint.no_weights",
                      fmt::format("neither {} nor {} found", kIndexFileName, kSingleFileName),
                      path.string());
    }
  } else if (has_entry(path)) {
    // A single shard; ReadOnlyFile refuses it if it is not a regular file.
    checkpoint.directory_ = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    shard_names.push_back(path.filename().string());
  } else {
    throw_bad_input("checkpoint.not_found", "no such file or directory", path.string());
  }

  if (checkpoint.index_) {
    for (const auto& [tensor, file] : (*checkpoint.index_)["weight_map"].items())
      if (!has_entry(checkpoint.directory_ / file.get<std::string>()))
        throw_bad_input(
            "index.missing_shard",
            fmt::format("shard {} listed in the index does not exist", file.get<std::string>()),
            (checkpoint.directory_ / kIndexFileName).string(), tensor);
  }

  for (const auto& name : shard_names)
    checkpoint.shards_.push_back(std::make_unique<SafetensorsFile>(checkpoint.directory_ / name));

  for (const auto& shard : checkpoint.shards_) {
    for (const auto& info : shard->tensors()) {
      auto [it, inserted] = checkpoint.by_name_.emplace(info.name, checkpoint.tensors_.size());
      if (!inserted)
        throw_bad_input(
            "checkpoint.duplicate_tensor",
            fmt::format("also stored in {}",
                        checkpoint.tensors_[it->second].shard->path().filename().string()),
            shard->path().string(), info.name);
      checkpoint.tensors_.push_back({shard.get(), &info});
    }
  }

  if (checkpoint.index_) {
    const auto& weight_map = (*checkpoint.index_)["weight_map"];
    fs::path index_path = checkpoint.directory_ / kIndexFileName;
    for (const auto& [tensor, file] : weight_map.items()) {
      auto location = checkpoint.find(tensor);
      if (!location || location->shard->path().filename() != file.get<std::string>())
        throw_bad_input("index.missing_tensor",
                        fmt::format("listed in the index as stored in {}, which does not hold it",
                                    file.get<std::string>()),
                        index_path.string(), tensor);
    }
    for (const auto& location : checkpoint.tensors_)
      if (!weight_map.contains(location.info->name))
        throw_bad_input("index.orphan_tensor", "stored in a shard but missing from the index",
                        location.shard->path().string(), location.info->name);
  }

  fs::path config_path = checkpoint.directory_ / "config.json";
  if (has_entry(config_path)) {
    checkpoint.config_ = read_json_file(config_path, "config.invalid_json");
    check_config_numbers(checkpoint.config_, config_path.string());
  }
  return checkpoint;
}

std::optional<TensorLocation> Checkpoint::find(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return std::nullopt;
  return tensors_[it->second];
}

const TensorLocation& Checkpoint::at(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end())
    throw_bad_input("checkpoint.missing_tensor", "not in the checkpoint", directory_.string(),
                    std::string(name));
  return tensors_[it->second];
}

std::uint64_t Checkpoint::tensor_bytes() const {
  std::uint64_t total = 0;
  for (const auto& shard : shards_) total += shard->header().data_size();
  return total;
}

std::uint64_t Checkpoint::file_bytes() const {
  std::uint64_t total = 0;
  for (const auto& shard : shards_) total += shard->file_size();
  return total;
}

std::vector<fs::path> Checkpoint::auxiliary_files() const {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(directory_)) {
    // Anything but a directory is copied, so a FIFO or a dangling link is refused by the
    // reader rather than silently left out of the output.
    std::error_code error;
    if (entry.is_directory(error)) continue;
    auto name = entry.path().filename().string();
    bool weights = entry.path().extension() == ".safetensors" || name == kIndexFileName;
    if (weights || name.starts_with(".")) continue;
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void copy_auxiliary_files(const Checkpoint& source, const fs::path& output_directory) {
  for (const auto& file : source.auxiliary_files())
    write_file_atomically(output_directory / file.filename(), read_text_file(file));
}

}  // namespace qs
