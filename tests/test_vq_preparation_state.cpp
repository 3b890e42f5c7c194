// The VQ preparation saved as job state (qs/ckpt/job/vq_preparation_state.h): read back exactly
// as saved, refused for another job's fingerprint or a damaged file, absent when never saved.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <bit>
#include <fstream>

#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/vq_preparation_state.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::error_kind_of;
using testing::ScratchDirectory;

VqAssignment sample_assignment() {
  VqAssignment assignment;
  for (const char* name : {"vq1", "vq3"}) {
    VqCodebook codebook;
    codebook.tier = *preset_vq_tier(name);
    codebook.dtype = DType::F16;
    codebook.codewords.resize(std::uint64_t{codebook.tier.k} * codebook.tier.d);
    // Values an F16 holds exactly (what a fitted codebook holds after rounding), negative
    // zero and a subnormal among them.
    for (std::size_t i = 0; i < codebook.codewords.size(); ++i)
      codebook.codewords[i] = static_cast<float>(static_cast<int>(i % 61) - 30) / 16.0f;
    codebook.codewords[0] = -0.0f;
    codebook.codewords[1] = 5.9604645e-08f;
    assignment.codebooks.emplace(fmt::format("vq_codebooks.{}", name), std::move(codebook));
  }
  assignment.tier_of["model.layers.1.mlp.experts.0.gate_proj"] = *preset_vq_tier("vq1");
  assignment.codebook_of["model.layers.1.mlp.experts.0.gate_proj"] = "vq_codebooks.vq1";
  assignment.tier_of["model.layers.1.mlp.experts.0.down_proj"] = *preset_vq_tier("vq3");
  assignment.codebook_of["model.layers.1.mlp.experts.0.down_proj"] = "vq_codebooks.vq3";
  return assignment;
}

TEST(VqPreparationState, ReadsBackWhatWasSaved) {
  ScratchDirectory scratch("vq-state");
  EXPECT_FALSE(load_vq_preparation(scratch.path(), "job-a"));
  const auto assignment = sample_assignment();
  const nlohmann::json report = {{"estimated_error", 1.5}};
  save_vq_preparation(scratch.path(), "job-a", assignment, report);
  const auto loaded = load_vq_preparation(scratch.path(), "job-a");
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->assignment.tier_of, assignment.tier_of);
  EXPECT_EQ(loaded->assignment.codebook_of, assignment.codebook_of);
  ASSERT_EQ(loaded->assignment.codebooks.size(), assignment.codebooks.size());
  for (const auto& [name, codebook] : assignment.codebooks) {
    const auto& read = loaded->assignment.codebooks.at(name);
    EXPECT_EQ(read.tier, codebook.tier);
    EXPECT_EQ(read.dtype, codebook.dtype);
    ASSERT_EQ(read.codewords.size(), codebook.codewords.size());
    for (std::size_t i = 0; i < read.codewords.size(); ++i)  // bit for bit, −0.0 included
      EXPECT_EQ(std::bit_cast<std::uint32_t>(read.codewords[i]),
                std::bit_cast<std::uint32_t>(codebook.codewords[i]))
          << name << " " << i;
  }
  EXPECT_EQ(loaded->report["estimated_error"], 1.5);
  for (const auto& file : vq_preparation_files())
    EXPECT_TRUE(std::filesystem::exists(scratch.path() / file)) << file;
  remove_vq_preparation(scratch.path());
  EXPECT_TRUE(std::filesystem::is_empty(scratch.path()));
  EXPECT_FALSE(load_vq_preparation(scratch.path(), "job-a"));
}

TEST(VqPreparationState, RefusesAnotherJobsOrADamagedPreparation) {
  ScratchDirectory scratch("vq-state-bad");
  save_vq_preparation(scratch.path(), "job-a", sample_assignment(), nlohmann::json::object());
  EXPECT_EQ(error_kind_of([&] { load_vq_preparation(scratch.path(), "job-b"); }),
            "job.fingerprint_mismatch");
  {  // a codebook byte changed after the preparation was saved
    std::fstream file(scratch.path() / kVqCodebooksFileName,
                      std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(-2, std::ios::end);
    file.put('\x7f');
  }
  EXPECT_EQ(error_kind_of([&] { load_vq_preparation(scratch.path(), "job-a"); }), "job.invalid");
  write_file_atomically(scratch.path() / kVqPreparationFileName, "{not json");
  EXPECT_EQ(error_kind_of([&] { load_vq_preparation(scratch.path(), "job-a"); }), "job.invalid");
}

}  // namespace
}  // namespace qs
