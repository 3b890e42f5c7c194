// Silent wrong outputs, made loud or right, through the CLI as users meet them: weights at the
// BF16 limits quantize to finite scales and values, a tensor a quantizer destroys is an error
// naming it, an empty Linear is refused before writing, NaN / Inf in tensors that are only
// copied are reported (or refused), and validate --ref measures huge weights without overflow.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/plan/recipe.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::EditableTensor;
using testing::quoted;
using testing::rewrite_checkpoint;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kExpert = "model.layers.1.mlp.experts.2";

constexpr std::uint16_t kBf16Max = 0x7F7F;         // 3.3895e38
constexpr std::uint16_t kBf16Lowest = 0xFF7F;      // −3.3895e38
constexpr std::uint16_t kBf16TenMillion = 0x4B18;  // 9,961,472
constexpr std::uint16_t kBf16Nan = 0x7FC0;

void set_bf16(EditableTensor& tensor, std::size_t index, std::uint16_t code) {
  ASSERT_EQ(tensor.spec.dtype, DType::BF16);
  std::memcpy(tensor.bytes.data() + 2 * index, &code, 2);
}

// The bundled model as one shard, with `edit` applied to the tensor named `name`.
std::filesystem::path model_with(const ScratchDirectory& scratch, const std::string& name,
                                 const std::function<void(EditableTensor&)>& edit) {
  const auto model = scratch.path() / "model";
  bool found = false;
  rewrite_checkpoint(kModel, model, [&](EditableTensor& tensor) {
    if (tensor.spec.name == name) {
      edit(tensor);
      found = true;
    }
    return true;
  });
  EXPECT_TRUE(found) << name;
  return model;
}

std::vector<float> read_f32(const std::filesystem::path& checkpoint, const std::string& name) {
  const auto opened = Checkpoint::open(checkpoint);
  const auto location = opened.at(name);
  std::vector<float> values(location.info->element_count());
  decode_to_f32(location.info->dtype, location.shard->read(*location.info), values);
  return values;
}

nlohmann::json reference_row(const std::string& validate_json, const std::string& tensor) {
  nlohmann::json found;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& node) {
    if (node.is_object()) {
      if (node.contains("relative_error") && node.value("tensor", "") == tensor) found = node;
      for (const auto& [key, value] : node.items()) walk(value);
    } else if (node.is_array()) {
      for (const auto& value : node) walk(value);
    }
  };
  walk(nlohmann::json::parse(validate_json));
  return found;
}

// A group holding both BF16 limits: int4's hi − lo overflows BF16 (it was an Inf scale) and
// int8's −3.39e38 / 2^121 = −127.5 rounds to code −128, which decodes to −2^128 = −Inf. Both
// now write finite scales whose every code decodes finite, and validate --ref measures the
// tensor's real error (it said "inf away").
TEST(NumericsHardening, WeightsAtTheBf16LimitsQuantizeToFiniteScalesAndValues) {
  ScratchDirectory scratch("limits");
  const std::string weight = kExpert + ".down_proj.weight";
  const auto model = model_with(scratch, weight, [](EditableTensor& tensor) {
    set_bf16(tensor, 3, kBf16Max);
    set_bf16(tensor, 7, kBf16Lowest);
  });
  for (const char* scheme : {"int4", "int8"}) {
    const auto out = scratch.path() / scheme;
    auto quantized =
        run_cli(fmt::format("quantize {} {} --scheme {}", quoted(model), quoted(out), scheme));
    ASSERT_EQ(quantized.exit_code, 0) << quantized.output;
    for (float scale : read_f32(out, kExpert + ".down_proj.weight_scale"))
      ASSERT_TRUE(std::isfinite(scale)) << scheme;
    auto validate = run_cli(fmt::format("validate {} --ref {} --json", quoted(out), quoted(model)));
    EXPECT_EQ(validate.exit_code, 0) << scheme << ": " << validate.output;
    const auto row = reference_row(validate.standard_output, weight);
    ASSERT_TRUE(row.is_object()) << validate.output;
    ASSERT_TRUE(row["relative_error"].is_number()) << row.dump();
    // The grid's own error: half a step at each limit, 1/15 of the range for int4.
    EXPECT_LT(row["relative_error"].get<double>(), scheme == std::string("int4") ? 0.07 : 0.005)
        << scheme << ": " << row.dump();
  }
}

// One outlier in gate_proj sets the global scale gate and up share (engines fuse them): every
// block of up_proj underflows and it decodes to all zeros (0 dB). That is an error naming it;
// a recipe can lower the floor.
TEST(NumericsHardening, AWeightQuantizedToNothingFailsNamingIt) {
  ScratchDirectory scratch("signal-lost");
  const auto model = model_with(scratch, kExpert + ".gate_proj.weight", [](EditableTensor& tensor) {
    set_bf16(tensor, 5, kBf16TenMillion);
  });
  auto refused = run_cli(
      fmt::format("quantize {} {} --scheme nvfp4", quoted(model), quoted(scratch.path() / "out")));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find(kExpert + ".up_proj.weight"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("min_snr_db"), std::string::npos) << refused.output;

  const auto recipe = scratch.path() / "lenient.yaml";
  write_file_atomically(recipe, R"(format: modelopt
min_snr_db: -1
rules:
  - name: routed experts
    category: routed_expert
    action: nvfp4
)");
  const auto out = scratch.path() / "lenient";
  auto lenient = run_cli(
      fmt::format("quantize {} {} --recipe {}", quoted(model), quoted(out), quoted(recipe)));
  ASSERT_EQ(lenient.exit_code, 0) << lenient.output;
  // What it wrote is what validate --ref must flag: the weight is lost (relative error 1),
  // whatever --max-relative-error allows.
  auto validate = run_cli(
      fmt::format("validate {} --ref {} --max-relative-error 5", quoted(out), quoted(model)));
  EXPECT_EQ(validate.exit_code, 1) << validate.output;
  EXPECT_NE(validate.output.find("has lost the weight"), std::string::npos) << validate.output;
  EXPECT_NE(validate.output.find(kExpert + ".up_proj.weight"), std::string::npos)
      << validate.output;
}

// Every recipe we ship still runs on the bundled model under the default floor (the seed
// recipes are run by test_seed_recipes / test_quantize_integer_cli; here the --scheme presets).
TEST(NumericsHardening, EveryPresetClearsTheDefaultQualityFloor) {
  ScratchDirectory scratch("floor");
  for (const char* scheme : {"nvfp4", "int8", "int8-channel", "int4", "int4-g32"}) {
    auto result = run_cli(fmt::format("quantize {} {} --scheme {}", quoted(kModel),
                                      quoted(scratch.path() / scheme), scheme));
    EXPECT_EQ(result.exit_code, 0) << scheme << ": " << result.output;
  }
}

// A weight of BF16's smallest normals (1.2e-38): s2 = amax/2688 is subnormal and its
// reciprocal, compressed-tensors' weight_global_scale, overflows to Inf.
TEST(NumericsHardening, ANvfp4GlobalScaleThatOverflowsIsAnErrorNamingTheWeight) {
  ScratchDirectory scratch("tiny-weight");
  const std::string weight = kExpert + ".down_proj.weight";
  const auto model = model_with(scratch, weight, [](EditableTensor& tensor) {
    for (std::size_t i = 0; i < tensor.bytes.size() / 2; ++i) set_bf16(tensor, i, 0x0080);
  });
  auto refused = run_cli(fmt::format("quantize {} {} --scheme nvfp4 --format compressed-tensors",
                                     quoted(model), quoted(scratch.path() / "out")));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find(weight), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("reciprocal"), std::string::npos) << refused.output;
}

// The job's layout check refuses an empty Linear first (config.json implies its shape); the
// planner refuses it too, whatever a config says, which the library-level half checks.
TEST(NumericsHardening, AnEmptyLinearWeightIsRefusedBeforeWriting) {
  for (int empty_dimension : {0, 1}) {
    ScratchDirectory scratch(fmt::format("empty-linear-{}", empty_dimension));
    const std::string weight = kExpert + ".down_proj.weight";
    const auto model = model_with(scratch, weight, [&](EditableTensor& tensor) {
      tensor.spec.shape[empty_dimension] = 0;
      tensor.bytes.clear();
    });
    for (const char* scheme : {"int4", "nvfp4"}) {
      const auto out = scratch.path() / scheme;
      auto refused =
          run_cli(fmt::format("quantize {} {} --scheme {}", quoted(model), quoted(out), scheme));
      EXPECT_EQ(refused.exit_code, 2) << refused.output;
      EXPECT_NE(refused.output.find(weight), std::string::npos) << refused.output;
      EXPECT_FALSE(std::filesystem::exists(out)) << "wrote before refusing";

      const auto recipe =
          parse_recipe(fmt::format("format: compressed-tensors\nrules:\n  - {{name: all, category: "
                                   "routed_expert, action: {}}}\n",
                                   scheme),
                       "test");
      const auto source = Checkpoint::open(model);
      const auto kind = testing::error_kind_of([&] {
        plan_quantization(source, recipe,
                          [](const QuantizeRequest&) { return make_copy_transform(); });
      });
      EXPECT_EQ(kind, "plan.empty_linear") << scheme << " dimension " << empty_dimension;
    }
  }
}

// A NaN in a norm (copied, never quantized): refused by default like a NaN in a quantized
// weight, and under --nan-policy zero written as it is and reported per tensor.
TEST(NumericsHardening, NanInACopiedTensorIsReported) {
  ScratchDirectory scratch("nan-norm");
  const std::string norm = "model.layers.1.post_attention_layernorm.weight";
  const auto model = model_with(scratch, norm, [](EditableTensor& tensor) {
    set_bf16(tensor, 0, kBf16Nan);
    set_bf16(tensor, 1, kBf16Nan);
    set_bf16(tensor, 2, 0x7F80);  // +Inf
  });
  auto refused = run_cli(fmt::format("quantize {} {} --scheme nvfp4", quoted(model),
                                     quoted(scratch.path() / "refused")));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find(norm), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("2 NaN and 1 Inf"), std::string::npos) << refused.output;

  auto reported = run_cli(fmt::format("quantize {} {} --scheme nvfp4 --nan-policy zero --json",
                                      quoted(model), quoted(scratch.path() / "reported")));
  ASSERT_EQ(reported.exit_code, 0) << reported.output;
  EXPECT_NE(reported.output.find("warning: 1 tensor(s) hold NaN or Inf"), std::string::npos)
      << reported.output;
  const auto json = nlohmann::json::parse(reported.standard_output);
  ASSERT_EQ(json["non_finite"].size(), 1u) << json["non_finite"].dump();
  EXPECT_EQ(json["non_finite"][0]["tensor"], norm);
  EXPECT_EQ(json["non_finite"][0]["nan"], 2);
  EXPECT_EQ(json["non_finite"][0]["inf"], 1);
}

}  // namespace
// A NaN in a routed expert that a VQ rule takes: the preparation (which samples rows of every
// expert for the codebooks) refuses it naming the tensor, like the quantizers do; under
// --nan-policy zero it reads it as 0 and the job completes.
TEST(NumericsHardening, NanInAVqExpertIsRefusedByThePreparationNamingTheTensor) {
  ScratchDirectory scratch("nan-vq");
  const std::string weight = kExpert + ".gate_proj.weight";
  const auto model = model_with(scratch, weight, [](EditableTensor& tensor) {
    const std::uint64_t cols = tensor.spec.shape[1];
    for (std::uint64_t row = 0; row < tensor.spec.shape[0]; ++row)
      set_bf16(tensor, row * cols + 3, kBf16Nan);  // every row, so any row sample meets one
  });
  const auto recipe = scratch.path() / "vq.yaml";
  write_file_atomically(recipe, R"(format: compressed-tensors
rules:
  - category: routed_expert
    action: vq
    tiers: [vq2]
    compensation: none
)");
  const auto refused = run_cli(fmt::format("quantize {} {} --recipe {}", quoted(model),
                                           quoted(scratch.path() / "refused"), quoted(recipe)));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find(weight), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("NaN/Inf"), std::string::npos) << refused.output;
  EXPECT_FALSE(std::filesystem::exists(scratch.path() / "refused" / "config.json"));

  const auto zeroed = run_cli(fmt::format("quantize {} {} --recipe {} --nan-policy zero",
                                          quoted(model), quoted(scratch.path() / "zeroed"),
                                          quoted(recipe)));
  EXPECT_EQ(zeroed.exit_code, 0) << zeroed.output;
}

}  // namespace qs
