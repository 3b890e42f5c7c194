// FP8 block-scaled checkpoints (DeepSeek-V3's layout) end to end: `quantize --scheme
// fp8-block` writes the layout and config engines load, inspect and validate recognise it,
// FP8 sources are read by quantize (to BF16 as fp8_cast_bf16.py does, and to NVFP4 / INT4 in
// one command), eval and generate; and every malformed FP8 source is refused with exit 2
// before anything is written.

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/formats/fp8_block_format.h"
#include "qs/ckpt/formats/fp8_block_sources.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::directory_contents;
using testing::EditableTensor;
using testing::error_kind_of;
using testing::quoted;
using testing::rewrite_checkpoint;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();
// kv_a_proj_with_mqa is [160, 256]: its second row of blocks is cut short at 32 rows.
const std::string kPartialModule = "model.layers.1.self_attn.kv_a_proj_with_mqa";

nlohmann::json read_config(const std::filesystem::path& directory) {
  return nlohmann::json::parse(read_text_file(directory / "config.json"));
}

void write_config(const std::filesystem::path& directory, const nlohmann::json& config) {
  std::ofstream(directory / "config.json") << config.dump(2);
}

// One FP8 checkpoint made from the bundled model, shared by the tests.
class Fp8Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDirectory("fp8-cli");
    const auto result =
        run_cli("quantize " + quoted(kModel) + " " + quoted(fp8()) + " --scheme fp8-block");
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  static void TearDownTestSuite() {
    delete scratch_;
    scratch_ = nullptr;
  }
  static std::filesystem::path fp8() { return scratch_->path() / "fp8"; }
  static std::filesystem::path dir(const std::string& name) { return scratch_->path() / name; }

  // The FP8 checkpoint with `edit` applied to its tensors (and `config_edit` to its config).
  static std::filesystem::path broken(
      const std::string& name, const testing::TensorEdit& edit,
      const std::function<void(nlohmann::json&)>& config_edit = {}) {
    const auto target = dir(name);
    rewrite_checkpoint(fp8(), target, edit);
    if (config_edit) {
      auto config = read_config(target);
      config_edit(config);
      write_config(target, config);
    }
    return target;
  }

  static ScratchDirectory* scratch_;
};
ScratchDirectory* Fp8Cli::scratch_ = nullptr;

TEST_F(Fp8Cli, WritesTheDeepSeekLayoutAndConfig) {
  const auto checkpoint = Checkpoint::open(fp8());
  std::size_t fp8_weights = 0;
  for (const auto& location : checkpoint.tensors()) {
    const auto& info = *location.info;
    if (info.dtype != DType::F8_E4M3) continue;
    ++fp8_weights;
    ASSERT_TRUE(info.name.ends_with(".weight")) << info.name;
    const auto module = info.name.substr(0, info.name.size() - 7);
    const auto scale = checkpoint.find(module + ".weight_scale_inv");
    ASSERT_TRUE(scale) << module;
    EXPECT_EQ(scale->info->dtype, DType::F32);
    EXPECT_EQ(scale->info->shape, fp8_block_scale_shape(info.shape[0], info.shape[1])) << module;
  }
  EXPECT_GT(fp8_weights, 100u);
  const auto partial = checkpoint.find(kPartialModule + ".weight_scale_inv");
  ASSERT_TRUE(partial);
  EXPECT_EQ(partial->info->shape, (Shape{2, 2}));

  const auto block = read_config(fp8()).at("quantization_config");
  EXPECT_EQ(block.at("quant_method"), "fp8");
  EXPECT_EQ(block.at("activation_scheme"), "dynamic");
  EXPECT_EQ(block.at("fmt"), "e4m3");
  EXPECT_EQ(block.at("weight_block_size"), nlohmann::json({128, 128}));
  // The preset keeps lm_head, routers, the indexer and the MTP layer in BF16: listed by exact
  // name for vLLM and transformers alike; the MTP layer's experts by their prefix.
  const auto& ignored = block.at("ignored_layers");
  EXPECT_EQ(ignored, block.at("modules_to_not_convert"));
  for (const char* name : {"lm_head", "model.layers.1.mlp.gate", "model.layers.4.self_attn.o_proj",
                           "model.layers.4.mlp.experts"})
    EXPECT_NE(std::find(ignored.begin(), ignored.end(), name), ignored.end()) << name;
  EXPECT_FALSE(std::filesystem::exists(fp8() / "hf_quant_config.json"));

  const auto inspect = run_cli("inspect " + quoted(fp8()));
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("quantization: fp8-block (config.json: fp8)"), std::string::npos)
      << inspect.output;
  const auto validate = run_cli("validate " + quoted(fp8()) + " --ref " + quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  EXPECT_NE(validate.output.find("fp8-block"), std::string::npos) << validate.output;
}

TEST_F(Fp8Cli, SchemeBf16DecodesLikeFp8CastBf16) {
  const auto result =
      run_cli("quantize " + quoted(fp8()) + " " + quoted(dir("bf16")) + " --scheme bf16");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(read_config(dir("bf16")).contains("quantization_config"));
  const auto source = Checkpoint::open(fp8());
  const auto decoded = Checkpoint::open(dir("bf16"));
  std::size_t compared = 0;
  for (const auto& location : decoded.tensors()) {
    const auto& info = *location.info;
    EXPECT_FALSE(info.name.ends_with(".weight_scale_inv")) << info.name;
    EXPECT_NE(info.dtype, DType::F8_E4M3) << info.name;
    const auto original = source.find(info.name);
    ASSERT_TRUE(original) << info.name;
    if (original->info->dtype != DType::F8_E4M3) {
      EXPECT_EQ(location.shard->read(info), original->shard->read(*original->info)) << info.name;
      continue;
    }
    // weight_dequant: e4m3 × the block's scale in f32, stored as BF16.
    ASSERT_EQ(info.dtype, DType::BF16);
    const auto codes = original->shard->read(*original->info);
    const auto scale_location = source.find(info.name + "_scale_inv");
    ASSERT_TRUE(scale_location);
    const auto scale_bytes = scale_location->shard->read(*scale_location->info);
    const auto bytes = location.shard->read(info);
    const std::uint64_t rows = info.shape[0], cols = info.shape[1];
    const std::uint64_t scale_cols = (cols + 127) / 128;
    for (std::uint64_t r = 0; r < rows; ++r)
      for (std::uint64_t c = 0; c < cols; ++c) {
        float scale = 0.0f;
        std::memcpy(&scale, scale_bytes.data() + ((r / 128) * scale_cols + c / 128) * 4, 4);
        const float value = e4m3_to_f32(static_cast<std::uint8_t>(codes[r * cols + c])) * scale;
        std::uint16_t stored = 0;
        std::memcpy(&stored, bytes.data() + (r * cols + c) * 2, 2);
        ASSERT_EQ(stored, f32_to_bf16(value)) << info.name << " [" << r << ", " << c << "]";
      }
    ++compared;
  }
  EXPECT_GT(compared, 100u);
  const auto validate = run_cli("validate " + quoted(dir("bf16")));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

TEST_F(Fp8Cli, Fp8ToNvfp4InOneCommandEqualsThroughBf16) {
  ASSERT_EQ(run_cli("quantize " + quoted(fp8()) + " " + quoted(dir("direct")) + " --scheme nvfp4")
                .exit_code,
            0);
  ASSERT_EQ(
      run_cli("quantize " + quoted(fp8()) + " " + quoted(dir("via")) + " --scheme bf16").exit_code,
      0);
  ASSERT_EQ(
      run_cli("quantize " + quoted(dir("via")) + " " + quoted(dir("via-nvfp4")) + " --scheme nvfp4")
          .exit_code,
      0);
  auto direct = directory_contents(dir("direct"));
  auto via = directory_contents(dir("via-nvfp4"));
  for (const char* name : {"model.safetensors", "config.json", "hf_quant_config.json"})
    EXPECT_TRUE(direct.at(name) == via.at(name)) << name;
  const auto validate = run_cli("validate " + quoted(dir("direct")) + " --ref " + quoted(kModel));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
}

TEST_F(Fp8Cli, Fp8ToInt4AndRunnerJobsReadFp8) {
  const auto int4 =
      run_cli("quantize " + quoted(fp8()) + " " + quoted(dir("int4")) + " --scheme int4");
  ASSERT_EQ(int4.exit_code, 0) << int4.output;
  EXPECT_EQ(run_cli("validate " + quoted(dir("int4"))).exit_code, 0);
  // eval and generate load the FP8 weights decoded on the fly.
  const auto eval =
      run_cli("eval --ref " + quoted(kModel) + " --model " + quoted(fp8()) + " --tokens " +
              quoted(kModel / "tokens.safetensors") + " --max-rows 2 --json");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  const auto figures = nlohmann::json::parse(eval.standard_output);
  EXPECT_GT(figures.dump().size(), 10u);
  const auto generate = run_cli("generate " + quoted(fp8()) + " --prompt hi --max-new 4");
  EXPECT_EQ(generate.exit_code, 0) << generate.output;
  // calibrate on the FP8 model, then GPTQ from the same FP8 source with those statistics.
  const auto stats = dir("fp8.qsc");
  const auto calibrate =
      run_cli("calibrate " + quoted(fp8()) + " --tokens " + quoted(kModel / "tokens.safetensors") +
              ":calib --max-rows 2 " + "--out " + quoted(stats));
  ASSERT_EQ(calibrate.exit_code, 0) << calibrate.output;
  const auto gptq = run_cli("quantize " + quoted(fp8()) + " " + quoted(dir("gptq")) +
                            " --scheme gptq-int4 --calib " + quoted(stats));
  EXPECT_EQ(gptq.exit_code, 0) << gptq.output;
  EXPECT_EQ(run_cli("validate " + quoted(dir("gptq"))).exit_code, 0);
}

TEST_F(Fp8Cli, ToFp8BlockRefusesMixingWithOtherSchemes) {
  ScratchDirectory scratch("fp8-mixed");
  const auto recipe = scratch.path() / "mixed.yaml";
  std::ofstream(recipe) << "rules:\n  - name: experts\n    category: routed_expert\n"
                           "    action: nvfp4\n  - name: rest\n    action: fp8-block\n";
  const auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "out") +
                              " --recipe " + quoted(recipe));
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("fp8-block beside other"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(scratch.path() / "out"));
}

TEST_F(Fp8Cli, SpliceMovesFp8ModulesWithTheirScales) {
  ASSERT_EQ(
      run_cli("quantize " + quoted(fp8()) + " " + quoted(dir("splice-bf16")) + " --scheme bf16")
          .exit_code,
      0);
  // Base BF16, layer 2's routed experts taken from the FP8 checkpoint: they arrive with their
  // weight_scale_inv and the output declares FP8, listing every BF16 Linear as not converted.
  const auto out = dir("spliced");
  const auto result =
      run_cli("splice " + quoted(out) + " --base " + quoted(dir("splice-bf16")) + " --take " +
              quoted(std::filesystem::path(fp8().string() + ":category=routed_expert;layers=2")));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto spliced = Checkpoint::open(out);
  const auto moved = spliced.find("model.layers.2.mlp.experts.3.down_proj.weight_scale_inv");
  ASSERT_TRUE(moved);
  const auto source = Checkpoint::open(fp8());
  const auto original = source.find(moved->info->name);
  ASSERT_TRUE(original);
  EXPECT_EQ(moved->shard->read(*moved->info), original->shard->read(*original->info));
  EXPECT_EQ(spliced.find("model.layers.2.mlp.experts.3.down_proj.weight")->info->dtype,
            DType::F8_E4M3);
  EXPECT_EQ(spliced.find("model.layers.1.mlp.experts.3.down_proj.weight")->info->dtype,
            DType::BF16);
  const auto block = read_config(out).at("quantization_config");
  EXPECT_EQ(block.at("quant_method"), "fp8");
  const auto& ignored = block.at("ignored_layers");
  EXPECT_NE(std::find(ignored.begin(), ignored.end(), "model.layers.1.mlp.experts"), ignored.end());
  EXPECT_EQ(std::find(ignored.begin(), ignored.end(), "model.layers.2.mlp.experts"), ignored.end());
  const auto validate = run_cli("validate " + quoted(out) + " --ref " + quoted(dir("splice-bf16")));
  EXPECT_EQ(validate.exit_code, 0) << validate.output;

  // FP8 beside NVFP4 has no one config: refused before anything is written.
  ASSERT_EQ(
      run_cli("quantize " + quoted(kModel) + " " + quoted(dir("splice-nvfp4")) + " --scheme nvfp4")
          .exit_code,
      0);
  const auto mixed = run_cli(
      "splice " + quoted(dir("mixed")) + " --base " + quoted(fp8()) + " --take " +
      quoted(std::filesystem::path(dir("splice-nvfp4").string() + ":category=routed_expert")));
  EXPECT_EQ(mixed.exit_code, 2) << mixed.output;
  EXPECT_NE(mixed.output.find("FP8 block-scaled"), std::string::npos) << mixed.output;
  EXPECT_FALSE(std::filesystem::exists(dir("mixed")));
}

TEST_F(Fp8Cli, ValidateHoldsTheConfigToTheTensors) {
  // An FP8 module listed as not converted, and a BF16 Linear the lists omit.
  const auto out = broken(
      "config-mismatch", [](EditableTensor&) { return true; },
      [](nlohmann::json& config) {
        auto& block = config["quantization_config"];
        for (const char* key : {"ignored_layers", "modules_to_not_convert"}) {
          auto& list = block[key];
          list.push_back("model.layers.1.self_attn.o_proj");
          list.erase(std::find(list.begin(), list.end(), "model.layers.4.self_attn.o_proj"));
        }
      });
  const auto validate = run_cli("validate " + quoted(out) + " --json");
  EXPECT_EQ(validate.exit_code, 1) << validate.output;
  const auto report = nlohmann::json::parse(validate.standard_output).dump();
  EXPECT_NE(report.find("config.scheme_mismatch"), std::string::npos) << report;
  EXPECT_NE(report.find("model.layers.1.self_attn.o_proj.weight"), std::string::npos) << report;
  EXPECT_NE(report.find("config.uncovered_linear"), std::string::npos) << report;
  EXPECT_NE(report.find("model.layers.4.self_attn.o_proj.weight"), std::string::npos) << report;
}

struct BadSource {
  BadSource(std::string name, std::string kind, std::string tensor, std::string message,
            testing::TensorEdit edit, std::function<void(nlohmann::json&)> config_edit = {},
            std::string validate_kind = {})
      : name(std::move(name)),
        kind(std::move(kind)),
        tensor(std::move(tensor)),
        message(std::move(message)),
        edit(std::move(edit)),
        config_edit(std::move(config_edit)),
        validate_kind(std::move(validate_kind)) {}
  std::string name;
  std::string kind;
  std::string tensor;   // named in the error
  std::string message;  // part of the error text
  testing::TensorEdit edit;
  std::function<void(nlohmann::json&)> config_edit;
  std::string validate_kind;  // validate's finding, when not `kind`
};

std::vector<BadSource> bad_sources() {
  const std::string scale = kPartialModule + ".weight_scale_inv";
  auto keep = [](EditableTensor&) { return true; };
  auto set_scale = [scale](float value) {
    return [scale, value](EditableTensor& tensor) {
      if (tensor.spec.name == scale) std::memcpy(tensor.bytes.data() + 4, &value, 4);
      return true;
    };
  };
  return {
      {"missing scale", "fp8.missing_scale", kPartialModule + ".weight", "without its",
       [scale](EditableTensor& tensor) { return tensor.spec.name != scale; }},
      {"scale grid too small", "fp8.invalid_scale", scale, "block scale tensor",
       [scale](EditableTensor& tensor) {
         if (tensor.spec.name == scale) {
           tensor.spec.shape = {1, 2};
           tensor.bytes.resize(8);
         }
         return true;
       }},
      {"scale in BF16", "fp8.invalid_scale", scale, "F32",
       [scale](EditableTensor& tensor) {
         if (tensor.spec.name == scale) {
           tensor.spec.dtype = DType::BF16;
           tensor.bytes.resize(tensor.bytes.size() / 2);
         }
         return true;
       }},
      {"NaN scale", "fp8.invalid_scale", scale, "finite",
       set_scale(std::numeric_limits<float>::quiet_NaN())},
      {"infinite scale", "fp8.invalid_scale", scale, "finite",
       set_scale(std::numeric_limits<float>::infinity())},
      {"zero scale", "fp8.invalid_scale", scale, "positive", set_scale(0.0f)},
      {"64x64 blocks", "fp8.block_size", "", "weight_block_size", keep,
       [](nlohmann::json& config) {
         config["quantization_config"]["weight_block_size"] = {64, 64};
       }},
      {"no block size", "fp8.block_size", "", "weight_block_size", keep,
       [](nlohmann::json& config) { config["quantization_config"].erase("weight_block_size"); }},
      {"no fp8 config", "fp8.block_size", "", "quant_method fp8", keep,
       [](nlohmann::json& config) { config.erase("quantization_config"); },
       "config.undeclared_quantization"},
  };
}

TEST_F(Fp8Cli, MalformedFp8SourcesAreRefusedBeforeAnythingIsWritten) {
  int index = 0;
  for (const auto& bad : bad_sources()) {
    const auto source = broken(fmt::format("bad{}", index++), bad.edit, bad.config_edit);
    EXPECT_EQ(error_kind_of([&] { fp8_block_modules(Checkpoint::open(source)); }), bad.kind)
        << bad.name;
    const std::filesystem::path out = source.string() + "-out";
    for (const std::string& command :
         {"quantize " + quoted(source) + " " + quoted(out) + " --scheme nvfp4",
          "quantize " + quoted(source) + " " + quoted(out) + " --scheme bf16",
          "generate " + quoted(source) + " --prompt hi --max-new 1"}) {
      const auto result = run_cli(command);
      EXPECT_EQ(result.exit_code, 2) << bad.name << ": " << command << "\n" << result.output;
      EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << bad.name << "\n"
                                                                                 << result.output;
      EXPECT_NE(result.output.find(bad.message), std::string::npos) << bad.name << result.output;
      EXPECT_NE(result.output.find(bad.tensor.empty() ? "config.json" : "tensor '" + bad.tensor),
                std::string::npos)
          << bad.name << "\n"
          << result.output;
      EXPECT_FALSE(std::filesystem::exists(out)) << bad.name << ": " << command;
    }
    // validate reports the same as a problem (exit 1), not as an unreadable checkpoint.
    const auto validate = run_cli("validate " + quoted(source) + " --json");
    EXPECT_EQ(validate.exit_code, 1) << bad.name << "\n" << validate.output;
    const auto& validate_kind = bad.validate_kind.empty() ? bad.kind : bad.validate_kind;
    EXPECT_NE(validate.standard_output.find(validate_kind), std::string::npos)
        << bad.name << "\n"
        << validate.standard_output;
  }
}

}  // namespace
}  // namespace qs
