#include "qs/ckpt/job/output_manifest.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"
#include "qs/ckpt/io/shard_scan.h"

namespace qs {
namespace {

constexpr int kManifestVersion = 1;

}  // namespace

void write_manifest(const std::filesystem::path& directory, const Manifest& manifest) {
  nlohmann::ordered_json out;
  out["format"] = "quantsmith-manifest";
  out["version"] = kManifestVersion;
  out["digest"] = "xxh3-128";
  auto& files = out["files"] = nlohmann::ordered_json::object();
  for (const auto& [name, entry] : manifest)
    files[name] = {{"bytes", entry.bytes}, {"xxh3_128", entry.xxh3_128}};
  write_file_atomically(directory / kManifestFileName, out.dump(2) + "\n");
}

std::optional<Manifest> read_manifest(const std::filesystem::path& directory) {
  const auto path = directory / kManifestFileName;
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return std::nullopt;
  const auto parsed = parse_json_input(read_text_file(path), "manifest.invalid", path.string());
  try {
    if (parsed.at("version").get<int>() != kManifestVersion ||
        parsed.at("digest").get<std::string>() != "xxh3-128")
      throw_bad_input("manifest.invalid", "manifest of an unknown version or digest",
                      path.string());
    Manifest manifest;
    for (const auto& [name, entry] : parsed.at("files").items())
      manifest[name] = {entry.at("bytes").get<std::uint64_t>(),
                        entry.at("xxh3_128").get<std::string>()};
    return manifest;
  } catch (const nlohmann::json::exception& failure) {
    throw_bad_input("manifest.invalid", fmt::format("unreadable manifest: {}", failure.what()),
                    path.string());
  }
}

ManifestCheck check_manifest(const std::filesystem::path& directory, const Manifest& computed,
                             const std::vector<std::string>& only) {
  ManifestCheck check;
  const auto manifest = read_manifest(directory);
  if (!manifest) return check;
  check.present = true;
  const auto wanted = [&](const std::string& name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  for (const auto& [name, recorded] : *manifest) {
    if (!wanted(name)) continue;
    ManifestEntry actual;
    if (const auto known = computed.find(name); known != computed.end()) {
      actual = known->second;
    } else {
      std::error_code error;
      if (!std::filesystem::exists(directory / name, error)) {
        check.mismatches.push_back(
            {name, "manifest.missing_file", "listed in the manifest but not in the checkpoint"});
        continue;
      }
      actual.xxh3_128 = hash_file_xxh3_128(directory / name, &actual.bytes);
    }
    ++check.files_verified;
    if (actual.bytes != recorded.bytes)
      check.mismatches.push_back(
          {name, "manifest.size_mismatch",
           fmt::format("{} bytes, the manifest records {}", actual.bytes, recorded.bytes)});
    else if (actual.xxh3_128 != recorded.xxh3_128)
      check.mismatches.push_back(
          {name, "manifest.digest_mismatch",
           fmt::format("xxh3-128 {}, the manifest records {}: the file changed after it was "
                       "written",
                       actual.xxh3_128, recorded.xxh3_128)});
  }
  for (const auto& [name, entry] : computed)
    if (wanted(name) && !manifest->contains(name))
      check.mismatches.push_back(
          {name, "manifest.unlisted_shard", "a shard the manifest does not list"});
  return check;
}

}  // namespace qs
