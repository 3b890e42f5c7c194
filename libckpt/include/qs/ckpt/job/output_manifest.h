#pragma once
// quantsmith-manifest.json: the xxh3-128 digest and size of every file a finished job wrote
// (shards, index, configs), so `validate --checksum` can tell on-disk corruption of our
// outputs from a valid checkpoint. Its bytes depend only on the files it lists (names sorted,
// no times), so two identical runs write identical manifests.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"  // kManifestFileName

namespace qs {

struct ManifestEntry {
  std::uint64_t bytes = 0;
  std::string xxh3_128;
};

using Manifest = std::map<std::string, ManifestEntry>;  // file name → entry

// Written atomically (temp file + fsync + rename).
void write_manifest(const std::filesystem::path& directory, const Manifest& manifest);

// The manifest in `directory`, or nullopt when there is none (a checkpoint not written by us).
// Throws BadInput "manifest.invalid" for a damaged one.
std::optional<Manifest> read_manifest(const std::filesystem::path& directory);

// One file whose bytes are not what the manifest recorded.
struct ManifestMismatch {
  std::string file;
  std::string kind;  // manifest.digest_mismatch, manifest.size_mismatch, manifest.missing_file,
                     // manifest.unlisted_shard
  std::string message;
};

struct ManifestCheck {
  bool present = false;  // false: no manifest (a checkpoint not written by quantsmith)
  std::size_t files_verified = 0;
  std::vector<ManifestMismatch> mismatches;
};

// Checks the files of `directory` against its manifest. `computed`: digests already known
// (the checksum scan's), by file name; every other listed file is hashed here. With `only`
// set (a single-file checkpoint), just those names are checked. A shard of `computed` the
// manifest does not list is a mismatch too.
ManifestCheck check_manifest(const std::filesystem::path& directory, const Manifest& computed,
                             const std::vector<std::string>& only = {});

}  // namespace qs
