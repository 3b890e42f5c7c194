// The VQ quantize job through `quantsmith quantize` as users run it (seed 004's recipe on the
// bundled model): mixed tiers within the target, gate/up sharing a tier, a checkpoint validate
// and eval accept, the --dry-run histogram, the allocation estimate's recipe keys, a stopped job resumed to the same bytes, and bad
// input refused before anything is written.

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "qs/ckpt/formats/vq_tier.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::directory_contents;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;
using testing::spawn_cli;

const std::filesystem::path kModel = testing::bundled_model();
const std::filesystem::path kRecipe = shipped_recipe("glm5-vq-seed004.yaml");

// One all-experts statistics file for the suite (as the seed's batch recipe makes it).
class VqQuantizeCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDirectory("vq-quantize-statistics");
    statistics_ = scratch_->path() / "calib-all-experts.qsc";
    const auto result = run_cli("calibrate " + quoted(kModel) + " --tokens " +
                                quoted(kModel / "tokens.safetensors") +
                                ":calib --max-rows 32 --all-experts --out " + quoted(statistics_));
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  static void TearDownTestSuite() {
    delete scratch_;
    scratch_ = nullptr;
  }

  static std::string quantize(const std::filesystem::path& out, const std::string& extra = "") {
    return "quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " + quoted(kRecipe) +
           " --calib " + quoted(statistics_) + (extra.empty() ? "" : " " + extra);
  }

  static ScratchDirectory* scratch_;
  static std::filesystem::path statistics_;
};
ScratchDirectory* VqQuantizeCli::scratch_ = nullptr;
std::filesystem::path VqQuantizeCli::statistics_;

// The JSON document of a --json run's output (stderr's progress lines come before it).
nlohmann::json json_of(const std::string& output) {
  const auto begin = output.starts_with("{") ? 0 : output.find("\n{") + 1;
  return nlohmann::json::parse(output.substr(begin, output.rfind('}') + 1 - begin));
}

bool empty_or_absent(const std::filesystem::path& directory) {
  return !std::filesystem::exists(directory) || std::filesystem::is_empty(directory);
}

TEST_F(VqQuantizeCli, Seed004RecipeWritesMixedTiersWithinTheTarget) {
  ScratchDirectory scratch("vq-seed004");
  const auto out = scratch.path() / "vq";
  const auto result = run_cli(quantize(out, "--json"));
  ASSERT_EQ(result.exit_code, 0) << result.output;

  const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
  const auto& vq = config["quantization_config"]["vq"];
  ASSERT_TRUE(vq.is_object()) << config.dump(1);
  const auto& modules = vq["modules"];
  auto checkpoint = Checkpoint::open(out);

  // Every routed expert of the decoder layers is VQ (the MTP layer, 4, stays BF16); gate and up
  // of an expert share a tier; the bits per weight, counted from the written tensors' shapes
  // and the tiers, stay within the target.
  std::set<std::string> tiers_used;
  double bits = 0.0;
  std::uint64_t weights = 0;
  for (int layer = 1; layer <= 3; ++layer)
    for (int expert = 0; expert < 16; ++expert) {
      const auto prefix = fmt::format("model.layers.{}.mlp.experts.{}.", layer, expert);
      ASSERT_TRUE(modules.contains(prefix + "gate_proj")) << prefix;
      EXPECT_EQ(modules[prefix + "gate_proj"]["tier"], modules[prefix + "up_proj"]["tier"])
          << prefix;
      for (const char* projection : {"gate_proj", "up_proj", "down_proj"}) {
        const std::string module = prefix + projection;
        const std::string tier_name = modules[module]["tier"];
        tiers_used.insert(tier_name);
        const auto tier = preset_vq_tier(tier_name);
        ASSERT_TRUE(tier) << tier_name;
        const auto scales = checkpoint.at(module + ".vq_scales");
        const auto rows = scales.info->shape[0];
        const auto cols = scales.info->shape[1] * kVqScaleGroup;
        const auto codes = checkpoint.at(module + ".vq_codes");
        EXPECT_EQ(codes.info->dtype, DType::I32);
        EXPECT_EQ(codes.info->shape,
                  (std::vector<std::uint64_t>{rows, tier->packed_words_per_row(cols)}));
        bits += static_cast<double>(codes.info->byte_size() + scales.info->byte_size()) * 8.0;
        weights += rows * cols;
      }
    }
  EXPECT_LE(bits / static_cast<double>(weights), 1.9);
  EXPECT_GE(tiers_used.size(), 2u) << "the allocator chose one tier for every expert";
  for (const auto& tier : tiers_used) EXPECT_TRUE(checkpoint.find("vq_codebooks." + tier)) << tier;
  EXPECT_FALSE(modules.contains("model.layers.4.mlp.experts.0.gate_proj"));
  EXPECT_TRUE(checkpoint.find("model.layers.4.mlp.experts.0.gate_proj.weight"));

  // The job's own report says the same.
  const auto report = json_of(result.output);
  EXPECT_LE(report["vq"]["bits_per_weight"].get<double>(), 1.9);
  EXPECT_NEAR(report["vq"]["bits_per_weight"].get<double>(), bits / weights, 1e-9);

  // validate holds VQ weights to a limit only when given one: 1-bit experts are up to about 0.95
  // away from their source (relative L2; their codes and gain-corrected scales are chosen for
  // the layer's output), a decode that lost the weight is 1 or more.
  const auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel) +
                                " --max-relative-error 0.99");
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  const auto eval =
      run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(out) + " --tokens " +
              quoted(kModel / "tokens.safetensors") + ":heldout --max-rows 4 --decode-steps 0");
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("mean KLD"), std::string::npos) << eval.output;
}

TEST_F(VqQuantizeCli, DryRunPrintsTheTierHistogramAndWritesNothing) {
  ScratchDirectory scratch("vq-dry-run");
  const auto out = scratch.path() / "vq";
  const auto result = run_cli(quantize(out, "--dry-run --param target_bpw=2.4"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("vq tiers per layer"), std::string::npos) << result.output;
  for (int layer = 1; layer <= 3; ++layer)
    EXPECT_NE(result.output.find(fmt::format("layer {:>3}:", layer)), std::string::npos);
  EXPECT_NE(result.output.find("bits per weight"), std::string::npos);
  EXPECT_NE(result.output.find("reads sampled rows"), std::string::npos);
  EXPECT_TRUE(empty_or_absent(out));

  const auto json = run_cli(quantize(out, "--dry-run --json --param target_bpw=2.4"));
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const auto plan = json_of(json.output);
  EXPECT_LE(plan["vq"]["bits_per_weight"].get<double>(), 2.4);
  EXPECT_GT(plan["vq"]["bits_per_weight"].get<double>(), 1.9);  // a looser target buys more bits
  EXPECT_EQ(plan["vq"]["layers"].size(), 3u);
}

// The seed recipe with extra keys on its VQ rule (after its `refine:` line).
std::filesystem::path recipe_with(const std::filesystem::path& directory, const std::string& keys) {
  auto text = read_text_file(kRecipe);
  const auto at = text.find("    refine: ");
  EXPECT_NE(at, std::string::npos);
  const auto end = text.find('\n', at) + 1;
  text.insert(end, keys);
  const auto path = directory / "seed004-variant.yaml";
  std::ofstream(path) << text;
  return path;
}

// The allocator scores tiers by the encode the job writes unless the rule says plain: the
// compensated, gain-corrected estimate is well below the plain one (1-bit codes gain the most),
// and both plans stay within the target.
TEST_F(VqQuantizeCli, AllocationEstimateFollowsTheRule) {
  ScratchDirectory scratch("vq-allocation-estimate");
  const auto out = scratch.path() / "vq";
  const auto plan_of = [&](const std::filesystem::path& recipe) {
    const auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " +
                                quoted(recipe) + " --calib " + quoted(statistics_) +
                                " --dry-run --json");
    EXPECT_EQ(result.exit_code, 0) << result.output;
    EXPECT_TRUE(empty_or_absent(out));
    return nlohmann::json(json_of(result.output));
  };
  const auto written = plan_of(kRecipe);
  // (Routing frequency off as well: the key is read, the plan still within the target.)
  const auto plain = plan_of(recipe_with(
      scratch.path(), "    allocation_estimate: plain\n    allocation_routing: false\n"));
  const double written_error = written["vq"]["preparation"]["estimated_error"].get<double>();
  const double plain_error = plain["vq"]["preparation"]["estimated_error"].get<double>();
  EXPECT_GT(written_error, 0.0);
  EXPECT_LT(written_error, 0.8 * plain_error);
  for (const auto* plan : {&written, &plain})
    EXPECT_LE((*plan)["vq"]["bits_per_weight"].get<double>(), 1.9);
}

// A one-tier rule pins every module to it; `codebooks: layer` gives each MoE layer its own
// codebook; without compensation or allocation no statistics file is needed.
TEST(VqQuantizeCliWithoutStatistics, PinnedTierWithLayerCodebooks) {
  ScratchDirectory scratch("vq-layer-codebooks");
  const auto recipe = scratch.path() / "vq2-layer.yaml";
  {
    std::ofstream file(recipe);
    file << "format: compressed-tensors\n"
            "rules:\n"
            "  - mtp: true\n"
            "    action: keep\n"
            "  - category: routed_expert\n"
            "    action: vq\n"
            "    tiers: [vq2]\n"
            "    codebooks: layer\n"
            "    compensation: none\n";
  }
  const auto out = scratch.path() / "vq2";
  const auto result =
      run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " + quoted(recipe));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto config = nlohmann::json::parse(read_text_file(out / "config.json"));
  const auto& modules = config["quantization_config"]["vq"]["modules"];
  EXPECT_EQ(modules.size(), 3u * 16u * 3u);
  auto checkpoint = Checkpoint::open(out);
  for (const auto& [module, entry] : modules.items()) {
    EXPECT_EQ(entry["tier"], "vq2") << module;
    const auto layer = module.substr(0, module.find(".mlp."));
    EXPECT_EQ(entry["codebook"], layer + ".mlp.experts.vq_codebooks.vq2") << module;
  }
  for (int layer = 1; layer <= 3; ++layer) {
    const auto codebook =
        checkpoint.find(fmt::format("model.layers.{}.mlp.experts.vq_codebooks.vq2", layer));
    ASSERT_TRUE(codebook) << layer;
    EXPECT_EQ(codebook->info->shape, (std::vector<std::uint64_t>{256, 4}));
    EXPECT_EQ(codebook->info->dtype, DType::F16);
  }
  EXPECT_FALSE(checkpoint.find("vq_codebooks.vq2"));
}

bool holds_a_shard(const std::filesystem::path& directory) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
    const auto name = entry.path().filename().string();
    if (name.starts_with("model-") && name.ends_with(".safetensors")) return true;
  }
  return false;
}

TEST_F(VqQuantizeCli, StoppedAfterAShardThenResumedGivesTheSameBytes) {
  ScratchDirectory scratch("vq-resume");
  const std::string options = "--max-shard-size 512KB --threads 1";
  const auto reference = scratch.path() / "reference";
  const auto full = run_cli(quantize(reference, options));
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const auto expected = directory_contents(reference);

  const auto out = scratch.path() / "stopped";
  const pid_t pid = spawn_cli({"quantize", kModel.string(), out.string(), "--recipe",
                               kRecipe.string(), "--calib", statistics_.string(),
                               "--max-shard-size", "512KB", "--threads", "1"});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!holds_a_shard(out) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the job finished before it could be stopped";
  EXPECT_NE(directory_contents(out), expected);

  // The preparation saved before the first item is read back, not fitted again.
  const auto resumed = run_cli(quantize(out, options + " --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("read back"), std::string::npos) << resumed.output;
  EXPECT_EQ(directory_contents(out), expected);
  // Finished: the saved preparation is gone (it is in the shards and config.json now).
  EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-vq-preparation.json"));
  EXPECT_FALSE(std::filesystem::exists(out / ".quantsmith-vq-codebooks.safetensors"));

  // A resume with another target is a different job: refused, nothing changed.
  const auto other = run_cli(quantize(out, options + " --resume --param target_bpw=2.4"));
  EXPECT_EQ(other.exit_code, 2) << other.output;
  EXPECT_NE(other.output.find("--force to start over"), std::string::npos) << other.output;
  EXPECT_EQ(directory_contents(out), expected);
}

TEST_F(VqQuantizeCli, BadInputIsRefusedBeforeAnythingIsWritten) {
  ScratchDirectory scratch("vq-bad-input");
  const auto out = scratch.path() / "out";
  const auto refused = [&](const std::string& command, const std::string& reason) {
    const auto result = run_cli(command);
    EXPECT_EQ(result.exit_code, 2) << command << "\n" << result.output;
    EXPECT_NE(result.output.find(reason), std::string::npos) << command << "\n" << result.output;
    EXPECT_TRUE(empty_or_absent(out)) << command;
  };
  // Below the cheapest tier (vq1 with its BF16 scales: 1.125 bits per weight).
  refused(quantize(out, "--param target_bpw=1.0"), "below the cheapest tier");
  // No statistics, or statistics only computed as the job runs.
  refused("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " + quoted(kRecipe),
          "need calibration statistics");
  refused("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " + quoted(kRecipe) +
              " --calib-tokens " + quoted(kModel / "tokens.safetensors") + ":calib --calib-rows 4",
          "computes only as the job runs");
  // A tier whose d does not divide the 128-column scale groups (and so the widths).
  const auto recipe = scratch.path() / "odd-tier.yaml";
  {
    std::ofstream file(recipe);
    file << "format: compressed-tensors\n"
            "vq_tiers:\n"
            "  vq3odd: {d: 3, k: 256}\n"
            "rules:\n"
            "  - category: routed_expert\n"
            "    action: vq\n"
            "    tiers: [vq3odd]\n";
  }
  refused("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " + quoted(recipe) +
              " --calib " + quoted(statistics_),
          "d 3 does not divide the 128-column scale group");
  // An allocation estimate the allocator does not know.
  refused("quantize " + quoted(kModel) + " " + quoted(out) + " --recipe " +
              quoted(recipe_with(scratch.path(), "    allocation_estimate: exact\n")) +
              " --calib " + quoted(statistics_),
          "allocation_estimate");
}

}  // namespace
// An FP8 block-scaled source (DeepSeek-V3) is read as the BF16 it decodes to, by the preparation
// (sampled rows for codebooks and tier estimates) as by the transform: VQ of the FP8 checkpoint
// writes the bytes VQ of its BF16 conversion writes.
TEST(VqQuantizeCliFp8, Fp8SourceGivesTheBytesOfItsBf16Conversion) {
  ScratchDirectory scratch("vq-fp8");
  const auto fp8 = testing::bundled_model("deepseek-v3-tiny-fp8");
  const auto statistics = scratch.path() / "stats.qsc";
  const auto calibrate = run_cli("calibrate " + quoted(fp8) + " --tokens " +
                                 quoted(fp8 / "tokens.safetensors") + ":calib --max-rows 8 " +
                                 "--all-experts --out " + quoted(statistics));
  ASSERT_EQ(calibrate.exit_code, 0) << calibrate.output;
  const auto recipe = scratch.path() / "vq.yaml";
  write_file_atomically(recipe, R"(format: compressed-tensors
rules:
  - category: routed_expert
    action: vq
    tiers: [vq1, vq2]
    target_bpw: 1.6
)");
  const auto bf16 = scratch.path() / "bf16";
  const auto convert = run_cli("quantize " + quoted(fp8) + " " + quoted(bf16) + " --scheme bf16");
  ASSERT_EQ(convert.exit_code, 0) << convert.output;
  auto vq_of = [&](const std::filesystem::path& source, const std::string& name) {
    const auto out = scratch.path() / name;
    const auto run = run_cli("quantize " + quoted(source) + " " + quoted(out) + " --recipe " +
                             quoted(recipe) + " --calib " + quoted(statistics));
    EXPECT_EQ(run.exit_code, 0) << run.output;
    return read_text_file(out / "model.safetensors");
  };
  const auto from_fp8 = vq_of(fp8, "from-fp8");
  EXPECT_FALSE(from_fp8.empty());
  EXPECT_EQ(from_fp8, vq_of(bf16, "from-bf16"));
}

}  // namespace qs
