// `quantsmith splice` as users run it: seed 000's hybrid (W8A16 side from one checkpoint,
// NVFP4 routed experts from another) built from the bundled model, with its mixed config,
// bytes carried unchanged (or converted between NVFP4 layouts), validated and evaluated; and
// every refusal before a byte is written.

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/plan/splice_plan.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;
using testing::shipped_recipe;

const std::filesystem::path kModel = testing::bundled_model();
const std::string kExpert = "model.layers.2.mlp.experts.5.down_proj";
const std::string kAttention = "model.layers.2.self_attn.q_b_proj";
// Seed 000 on the 4-layer model: routed experts of the main MoE layers (1-3) from the NVFP4
// checkpoint; the MTP layer (4) keeps the W8A16 side's.
const std::string kExpertsRule = "category=routed_expert;layers=1-3";

nlohmann::json config_of(const std::filesystem::path& directory) {
  return nlohmann::json::parse(read_text_file(directory / "config.json"));
}

std::vector<std::byte> bytes_of(const std::filesystem::path& directory, const std::string& name) {
  auto checkpoint = Checkpoint::open(directory);
  const auto location = checkpoint.at(name);
  return location.shard->read(*location.info);
}

float scalar_of(const std::filesystem::path& directory, const std::string& name) {
  const auto bytes = bytes_of(directory, name);
  float value = 0;
  std::memcpy(&value, bytes.data(), sizeof(value));
  return value;
}

class Splice : public ::testing::Test {
 protected:
  // The sources, made once with quantsmith itself: the W8A16 side (seed 000's Int8Mix
  // recipe) and NVFP4 routed experts in both layouts.
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<ScratchDirectory>("splice");
    quantize(w8a16(), "--recipe " + quoted(shipped_recipe("glm5-w8a16-int8mix-seed000.yaml")));
    for (const char* format : {"modelopt", "compressed-tensors"})
      quantize(nvfp4(format), "--recipe " + quoted(shipped_recipe("glm5-nvfp4-seed001.yaml")) +
                                  " --param boundary_layers=0 --format " + format);
  }
  static void TearDownTestSuite() { scratch_.reset(); }
  static void quantize(const std::filesystem::path& out, const std::string& arguments) {
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " " + arguments);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  static std::filesystem::path w8a16() { return scratch_->path() / "w8a16"; }
  static std::filesystem::path nvfp4(const std::string& format) {
    return scratch_->path() / ("nvfp4-" + format);
  }
  std::filesystem::path fresh(const std::string& name) {
    return scratch_->path() / (name + "-" + std::to_string(++outputs_));
  }
  testing::CliResult splice(const std::filesystem::path& out, const std::string& rules,
                            const std::string& extra = "") {
    return run_cli("splice " + quoted(out) + " --base " + quoted(w8a16()) + " " + rules + " " +
                   extra);
  }
  std::string take(const std::filesystem::path& source, const std::string& selector) {
    return "--take " + testing::quoted(std::filesystem::path(source.string() + ":" + selector));
  }

  static inline std::unique_ptr<ScratchDirectory> scratch_;
  static inline int outputs_ = 0;
};

TEST_F(Splice, Seed000HybridCarriesBytesAndConfigValidatesAndEvaluates) {
  const auto out = fresh("hybrid");
  auto result = splice(out, take(nvfp4("compressed-tensors"), kExpertsRule));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("144 modules"), std::string::npos) << result.output;  // 3×16×3

  // Experts carry the NVFP4 source's bytes, everything else the W8A16 side's.
  for (const char* parameter : {".weight_packed", ".weight_scale", ".weight_global_scale"})
    EXPECT_EQ(bytes_of(out, kExpert + parameter),
              bytes_of(nvfp4("compressed-tensors"), kExpert + parameter))
        << parameter;
  for (const char* parameter : {".weight_packed", ".weight_scale", ".weight_shape"})
    EXPECT_EQ(bytes_of(out, kAttention + parameter), bytes_of(w8a16(), kAttention + parameter));
  const std::string mtp_expert = "model.layers.4.mlp.experts.0.up_proj";
  EXPECT_EQ(bytes_of(out, mtp_expert + ".weight_packed"),
            bytes_of(w8a16(), mtp_expert + ".weight_packed"));

  // One config for the mixture: an NVFP4 group, the INT8 groups, mixed-precision.
  const auto config = config_of(out)["quantization_config"];
  EXPECT_EQ(config["quant_method"], "compressed-tensors");
  EXPECT_EQ(config["format"], "mixed-precision");
  std::set<std::string> formats;
  for (const auto& [name, group] : config["config_groups"].items())
    formats.insert(group["format"].get<std::string>());
  EXPECT_EQ(formats, (std::set<std::string>{"nvfp4-pack-quantized", "pack-quantized"}));

  auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  auto eval =
      run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(out) + " --tokens " +
              quoted(kModel / "tokens.safetensors") + " --max-rows 2 --decode-steps 0 --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const auto report = nlohmann::json::parse(eval.standard_output);
  EXPECT_LT(report["kld"]["mean"].get<double>(), 0.05) << eval.output;
}

TEST_F(Splice, ModeloptExpertsAreConvertedToCompressedTensors) {
  const auto out = fresh("converted");
  auto result = splice(out, take(nvfp4("modelopt"), kExpertsRule), "--json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(nlohmann::json::parse(result.standard_output)["converted_modules"], 144);
  // Codes and block scales unchanged; the global scale is the reciprocal of scale_2, which is
  // what the compressed-tensors quantizer writes for the same weight.
  EXPECT_EQ(bytes_of(out, kExpert + ".weight_packed"),
            bytes_of(nvfp4("modelopt"), kExpert + ".weight"));
  EXPECT_EQ(bytes_of(out, kExpert + ".weight_scale"),
            bytes_of(nvfp4("modelopt"), kExpert + ".weight_scale"));
  EXPECT_EQ(scalar_of(out, kExpert + ".weight_global_scale"),
            1.0f / scalar_of(nvfp4("modelopt"), kExpert + ".weight_scale_2"));
  EXPECT_EQ(bytes_of(out, kExpert + ".weight_packed"),
            bytes_of(nvfp4("compressed-tensors"), kExpert + ".weight_packed"));
  auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

TEST_F(Splice, Nvfp4OnlySpliceCanBeWrittenAsModelopt) {
  // BF16 base, NVFP4 experts from the compressed-tensors checkpoint, written as modelopt.
  const auto out = fresh("modelopt");
  auto result = run_cli("splice " + quoted(out) + " --base " + quoted(kModel) + " " +
                        take(nvfp4("compressed-tensors"), kExpertsRule) + " --format modelopt");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(config_of(out)["quantization_config"]["quant_method"], "modelopt");
  // The base is BF16: no KV-cache setting to carry.
  EXPECT_TRUE(config_of(out)["quantization_config"]["kv_cache_quant_algo"].is_null());
  // With the modelopt checkpoint as base, its FP8 KV-cache setting carries over.
  const auto kv = fresh("modelopt-kv");
  result = run_cli("splice " + quoted(kv) + " --base " + quoted(nvfp4("modelopt")) + " " +
                   take(nvfp4("compressed-tensors"), "category=routed_expert;layers=2") +
                   " --format modelopt");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(config_of(kv)["quantization_config"]["kv_cache_quant_algo"], "FP8");
  // Written as compressed-tensors, the setting is dropped, and said.
  result = run_cli("splice " + quoted(fresh("ct-kv")) + " --base " + quoted(nvfp4("modelopt")) +
                   " " + take(nvfp4("compressed-tensors"), "category=routed_expert;layers=2"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("KV-cache quantization (FP8) is not carried"), std::string::npos)
      << result.output;
  EXPECT_TRUE(std::filesystem::exists(out / "hf_quant_config.json"));
  EXPECT_EQ(bytes_of(out, kExpert + ".weight"), bytes_of(nvfp4("modelopt"), kExpert + ".weight"));
  auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

TEST_F(Splice, DryRunWritesNothingAndListsTheRules) {
  const auto out = fresh("dry");
  auto result = splice(out, take(nvfp4("compressed-tensors"), kExpertsRule), "--dry-run");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_NE(result.output.find("rule '"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(kExpert), std::string::npos) << result.output;
}

TEST_F(Splice, RefusesWhatCannotWorkBeforeWriting) {
  struct Case {
    std::string arguments;
    std::string message;
  };
  const auto ct = nvfp4("compressed-tensors");
  const std::vector<Case> cases = {
      // gate from NVFP4, up from INT4: one engine matrix, two schemes.
      {take(ct, "role=expert.gate;layers=1-3"), "members come from different sources"},
      // The modelopt output cannot describe the W8A16 side's integer groups.
      {take(ct, kExpertsRule) + " --format modelopt", "modelopt output cannot describe"},
      {"--take " + testing::quoted(ct), "no SOURCE: before the selector"},
      {take(ct, "category=nonsense"), "unknown category 'nonsense'"},
      {take(ct, "colour=blue"), "unknown key 'colour'"},
      {take(ct, "module=*"), "selects every one of the"},
  };
  for (const auto& c : cases) {
    const auto out = fresh("refused");
    auto result = splice(out, c.arguments);
    EXPECT_EQ(result.exit_code, 2) << c.arguments << "\n" << result.output;
    EXPECT_NE(result.output.find(c.message), std::string::npos) << c.message << "\n"
                                                                << result.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << c.arguments;
  }
}

// A source whose modules are malformed in a way only validate's format checks see (a NaN
// block scale: the shapes all fit) is refused when a rule takes those modules, as `validate`
// would refuse the output; taking only its sound modules still works.
TEST_F(Splice, RefusesMalformedModulesItWouldTake) {
  const auto broken = fresh("broken-source");
  const std::string module = "model.layers.1.mlp.experts.3.up_proj";
  testing::rewrite_checkpoint(nvfp4("compressed-tensors"), broken,
                              [&](testing::EditableTensor& tensor) {
                                if (tensor.spec.name == module + ".weight_scale")
                                  tensor.bytes[5] = std::byte{0x7F};  // E4M3 NaN
                                return true;
                              });
  const auto out = fresh("from-broken");
  auto result = splice(out, take(broken, kExpertsRule));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("nvfp4.bad_block_scale"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(module + ".weight_scale"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(out));

  const auto sound = fresh("from-sound-part");
  result = splice(sound, take(broken, "category=routed_expert;layers=2-3"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

TEST_F(Splice, RefusesSourcesOfAnotherArchitectureOrMissingModules) {
  // Another vocabulary (a consistent checkpoint: its tensors match its own config).
  const auto other = fresh("other-vocab");
  ASSERT_EQ(run_cli("synth --preset tiny --vocab 1024 --out " + quoted(other)).exit_code, 0);
  auto result = splice(fresh("refused"), take(other, "category=routed_expert"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("same architecture and vocabulary"), std::string::npos)
      << result.output;

  // A source without the attention of layer 2.
  const auto partial = fresh("partial");
  testing::rewrite_checkpoint(kModel, partial, [](testing::EditableTensor& tensor) {
    return tensor.spec.name.find("layers.2.self_attn") == std::string::npos;
  });
  result = splice(fresh("refused"), take(partial, "category=attention"));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  // Its config.json still describes layer 2's attention: the layout check every job runs on
  // its sources refuses it when it is opened.
  EXPECT_NE(result.output.find("layout.missing_tensor"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("model.layers.2.self_attn"), std::string::npos) << result.output;

  // Output into an input.
  result = splice(w8a16(), take(nvfp4("compressed-tensors"), kExpertsRule));
  EXPECT_EQ(result.exit_code, 2) << result.output;
}

TEST_F(Splice, WarnsAboutARuleThatSelectsNothing) {
  const auto out = fresh("warn");
  auto result = splice(out,
                       take(nvfp4("compressed-tensors"), kExpertsRule) + " " +
                           take(nvfp4("compressed-tensors"), "category=routed_expert;layers=0"),
                       "--dry-run");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("selected no module"), std::string::npos) << result.output;

  // Experts of layer 2 from the modelopt checkpoint first, then all from the other: the
  // overlap is said.
  result = splice(fresh("overlap"),
                  take(nvfp4("modelopt"), "category=routed_expert;layers=2") + " " +
                      take(nvfp4("compressed-tensors"), kExpertsRule),
                  "--dry-run");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("also matches 48 module(s)"), std::string::npos) << result.output;
}

TEST(TakeRule, ParsesSelectorsAndShorthands) {
  auto rule = parse_take_rule("/a/b:category=routed_expert,shared_expert;layers=3-77");
  EXPECT_EQ(rule.source, "/a/b");
  EXPECT_EQ(rule.match.categories.size(), 2u);
  ASSERT_TRUE(rule.match.layers.has_value());
  rule = parse_take_rule("src:mtp");
  EXPECT_EQ(rule.match.mtp, std::optional<bool>(true));
  rule = parse_take_rule("src:routed_expert");
  EXPECT_EQ(rule.match.categories.size(), 1u);
  rule = parse_take_rule("src:module=re:^model\\.layers\\.3\\..*$;role=expert.down");
  EXPECT_EQ(rule.match.modules.size(), 1u);
  EXPECT_EQ(rule.match.roles.size(), 1u);
  for (const char* bad : {"nocolon", ":category=attention", "src:", "src:mtp=maybe",
                          "src:layers=banana", "src:role=expert.nothing"})
    EXPECT_EQ(testing::error_kind_of([&] { parse_take_rule(bad); }) != "no error", true) << bad;
}

}  // namespace
}  // namespace qs

namespace qs {
namespace {

// 7-bit codes pack like 8-bit ones (four per int32 word): the spliced output's config must
// keep the source group's num_bits 7, or every reader decodes them as 8-bit codes.
TEST(SpliceWidths, SevenBitExpertsKeepTheirWidth) {
  ScratchDirectory scratch("splice-7bit");
  const auto recipe = scratch.path() / "int7.yaml";
  write_file_atomically(recipe,
                        "format: compressed-tensors\nrules:\n  - name: experts\n"
                        "    category: routed_expert\n    action: int\n    bits: 7\n"
                        "    symmetric: true\n    group_size: 32\n");
  const auto seven = scratch.path() / "int7";
  ASSERT_EQ(
      run_cli("quantize " + quoted(kModel) + " " + quoted(seven) + " --recipe " + quoted(recipe))
          .exit_code,
      0);
  const auto out = scratch.path() / "spliced";
  auto result = run_cli("splice " + quoted(out) + " --base " + quoted(kModel) + " --take " +
                        quoted(std::filesystem::path(seven.string() + ":category=routed_expert")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto config = config_of(out)["quantization_config"];
  bool seven_bits = false;
  for (const auto& [name, group] : config["config_groups"].items())
    seven_bits = seven_bits || group["weights"]["num_bits"] == 7;
  EXPECT_TRUE(seven_bits) << config.dump(2);
  result = run_cli("validate " + quoted(out) + " --ref " + quoted(kModel) +
                   " --max-relative-error 0.05");
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

}  // namespace
}  // namespace qs
