#pragma once
// The VQ preparation as job state (docs/algorithms/vq-quantize-job.md): the shared
// codebooks and each module's tier are decided once, from the whole model, before any expert is
// encoded, and every shard's bytes depend on them. They are saved in OUT before the executor
// starts, so a killed job resumed with --resume (or a partitioned worker started later) reads
// them back instead of fitting again, and its shards match the first run's byte for byte.
//
// Two files, both hidden from checkpoint readers (names starting with '.'):
//   .quantsmith-vq-codebooks.safetensors   every codebook tensor, in its dtype
//   .quantsmith-vq-preparation.json        fingerprint, tiers, modules' tiers and codebooks,
//                                          the codebooks file's digest, the preparation report
// Each is written atomically; the JSON last, so it exists only beside a complete codebooks file.
// A finished job removes both (remove_vq_preparation): the codebooks are then in the shards and
// the tiers in config.json, and the output holds only files that are the same on every run (the
// fingerprint names the inputs' modification times). --resume on a finished job prepares again,
// with the same result.

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "qs/ckpt/plan/quantize_plan.h"

namespace qs {

inline constexpr std::string_view kVqCodebooksFileName = ".quantsmith-vq-codebooks.safetensors";
inline constexpr std::string_view kVqPreparationFileName = ".quantsmith-vq-preparation.json";

// The names above: what a job claiming OUT owns besides its job file's records.
std::vector<std::string> vq_preparation_files();

struct SavedVqPreparation {
  VqAssignment assignment;
  nlohmann::json report;  // what the preparation reported, as the caller saved it
};

// `fingerprint` identifies everything the preparation depends on (recipe, statistics file,
// source checkpoint, numerics).
void save_vq_preparation(const std::filesystem::path& directory, const std::string& fingerprint,
                         const VqAssignment& assignment, const nlohmann::json& report);

// nullopt when `directory` holds no (complete) preparation. Throws BadInput
// "job.fingerprint_mismatch" for a preparation made from other inputs, "job.invalid" for a
// damaged one (unreadable, a codebook missing or of the wrong shape, the digest differs).
std::optional<SavedVqPreparation> load_vq_preparation(const std::filesystem::path& directory,
                                                      const std::string& fingerprint);

// Removes both files (absent ones are fine).
void remove_vq_preparation(const std::filesystem::path& directory);

}  // namespace qs
