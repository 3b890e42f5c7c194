#include "qs/ckpt/job/output_layout.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/io/shard_scan.h"
#include "qs/ckpt/job/output_manifest.h"

namespace qs {
namespace {

constexpr int kLayoutRecordVersion = 1;

}  // namespace

const StringMap& output_shard_metadata() {
  static const StringMap metadata = {{"format", "pt"}};
  return metadata;
}

OutputLayout make_output_layout(std::string fingerprint,
                                const std::vector<std::vector<TensorSpec>>& shard_plan,
                                std::vector<std::pair<std::string, std::string>> small_files) {
  OutputLayout layout;
  layout.fingerprint = std::move(fingerprint);
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard) {
    layout.shard_files.push_back(shard_file_name(shard, shard_plan.size()));
    std::uint64_t bytes =
        build_safetensors_header(shard_plan[shard], output_shard_metadata()).size();
    for (const auto& tensor : shard_plan[shard]) bytes += tensor.byte_size();
    layout.shard_bytes.push_back(bytes);
  }
  layout.small_files = std::move(small_files);
  if (shard_plan.size() > 1) layout.index = checkpoint_index_text(shard_plan);
  layout.files = layout.shard_files;
  for (const auto& [name, content] : layout.small_files) layout.files.push_back(name);
  layout.files.emplace_back(kManifestFileName);
  if (shard_plan.size() > 1) layout.files.emplace_back(kIndexFileName);
  return layout;
}

void write_completed_output(const std::filesystem::path& directory, const OutputLayout& layout,
                            const std::vector<std::string>& digests) {
  Manifest manifest;
  for (std::size_t shard = 0; shard < layout.shard_files.size(); ++shard)
    manifest[layout.shard_files[shard]] = {layout.shard_bytes[shard], digests.at(shard)};
  auto small_files = layout.small_files;
  for (const auto& [name, content] : small_files) write_file_atomically(directory / name, content);
  if (!layout.index.empty()) small_files.emplace_back(kIndexFileName, layout.index);
  for (const auto& [name, content] : small_files)
    manifest[name] = {content.size(), xxh3_128_hex(content)};
  write_manifest(directory, manifest);
  if (!layout.index.empty()) write_file_atomically(directory / kIndexFileName, layout.index);
}

nlohmann::ordered_json output_layout_json(const OutputLayout& layout) {
  nlohmann::ordered_json out;
  out["format"] = "quantsmith-partition";
  out["version"] = kLayoutRecordVersion;
  out["fingerprint"] = layout.fingerprint;
  auto shards = nlohmann::ordered_json::array();
  for (std::size_t shard = 0; shard < layout.shard_files.size(); ++shard)
    shards.push_back({{"file", layout.shard_files[shard]}, {"bytes", layout.shard_bytes[shard]}});
  out["shards"] = std::move(shards);
  auto small = nlohmann::ordered_json::array();
  for (const auto& [name, content] : layout.small_files)
    small.push_back({{"file", name}, {"content", content}});
  out["small_files"] = std::move(small);
  out["index"] = layout.index;
  out["files"] = layout.files;
  return out;
}

OutputLayout output_layout_from_json(const nlohmann::json& json, const std::string& kind,
                                     const std::string& file) {
  OutputLayout layout;
  try {
    if (json.at("format").get<std::string>() != "quantsmith-partition" ||
        json.at("version").get<int>() != kLayoutRecordVersion)
      throw_bad_input(kind, "partition record of another quantsmith version", file);
    layout.fingerprint = json.at("fingerprint").get<std::string>();
    for (const auto& shard : json.at("shards")) {
      layout.shard_files.push_back(shard.at("file").get<std::string>());
      layout.shard_bytes.push_back(shard.at("bytes").get<std::uint64_t>());
    }
    for (const auto& small : json.at("small_files"))
      layout.small_files.emplace_back(small.at("file").get<std::string>(),
                                      small.at("content").get<std::string>());
    layout.index = json.at("index").get<std::string>();
    layout.files = json.at("files").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& error) {
    throw_bad_input(kind, fmt::format("unreadable partition record: {}", error.what()), file);
  }
  // Finalize writes these names into OUT: nothing may point elsewhere.
  for (const auto& name : layout.files)
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw_bad_input(kind, fmt::format("partition record lists '{}' as a file", name), file);
  return layout;
}

}  // namespace qs
