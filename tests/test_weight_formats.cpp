// The weight-format registry, parametrized over its formats: each case encodes a small weight
// with libquant's writer for the format, writes it as a checkpoint with the config that
// declares it, and checks detection, logical shape, decoding (the registry's check +
// libquant's decoder), the runner's WeightLoader and validate. Then every required companion
// of the format is broken in turn (missing, wrong dtype; weight_shape of the wrong dtype or
// length where the format has one) and the runner must refuse it with a BadInput naming the
// module's tensor; the CLI must refuse the same with exit 2 and one line. A new format is
// tested by adding one line to kCases (RegistryCoverage fails until it is there).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/formats/fp8_block_format.h"
#include "qs/ckpt/formats/quantization_config.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/ckpt/io/safetensors.h"
#include "qs/ckpt/plan/quantize_plan.h"
#include "qs/ckpt/validate/validation.h"
#include "qs/quant/dequantize_transform.h"
#include "qs/quant/nvfp4_validation.h"
#include "qs/quant/quantize_transforms.h"
#include "qs/run/weight_loader.h"
#include "quantized_outputs.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::EditableTensor;
using testing::quoted;
using testing::ScratchDirectory;

constexpr std::uint64_t kRows = 32;
constexpr std::uint64_t kCols = 256;
const std::string kModule = "model.layers.0.mlp.down_proj";

IntegerOptions integer_scheme(int bits, bool symmetric, std::int64_t group_size) {
  IntegerOptions options;
  options.bits = bits;
  options.symmetric = symmetric;
  options.group_size = group_size;
  return options;
}

// One line per format quantsmith writes (and so reads back).
struct FormatCase {
  const char* label;
  WeightLayout layout;
  RecipeAction action;  // how libquant writes it; Keep: the BF16 weight itself
  OutputFormat config;
  IntegerOptions integer;
  double max_relative_error;       // of the decoded weight against the BF16 one (relative L2)
  const char* quantize_arguments;  // the CLI's way to write it; nullptr: the source as it is
};

const FormatCase kCases[] = {
    {"dense", WeightLayout::Dense, RecipeAction::Keep, OutputFormat::Modelopt, {}, 0.0, nullptr},
    {"nvfp4_modelopt",
     WeightLayout::Nvfp4Modelopt,
     RecipeAction::Nvfp4,
     OutputFormat::Modelopt,
     {},
     0.2,
     "--scheme nvfp4"},
    {"nvfp4_compressed_tensors",
     WeightLayout::Nvfp4CompressedTensors,
     RecipeAction::Nvfp4,
     OutputFormat::CompressedTensors,
     {},
     0.2,
     "--scheme nvfp4 --format compressed-tensors"},
    {"pack_quantized_int4_asym", WeightLayout::PackQuantized, RecipeAction::Int,
     OutputFormat::CompressedTensors, integer_scheme(4, false, 128), 0.2, "--scheme int4"},
    {"pack_quantized_int8_channel", WeightLayout::PackQuantized, RecipeAction::Int,
     OutputFormat::CompressedTensors, integer_scheme(8, true, kChannelGroup), 0.02,
     "--scheme int8-channel"},
    {"fp8_block", WeightLayout::Fp8Block, RecipeAction::Fp8Block, OutputFormat::Modelopt, {},
     0.05, "--scheme fp8-block"},
};

// Formats quantsmith recognises in other tools' checkpoints but neither writes nor decodes.
constexpr WeightLayout kDetectedOnly[] = {WeightLayout::Int8, WeightLayout::Fp8};
// Formats whose modules need a tensor beyond their own (VQ: the shared codebook the config
// names), so one module's tensors cannot be its checkpoint: tested in tests/test_vq_format.cpp.
constexpr WeightLayout kTestedElsewhere[] = {WeightLayout::Vq};

// gtest prints a parameter with this (the default is the struct's bytes).
void PrintTo(const FormatCase& format_case, std::ostream* out) { *out << format_case.label; }

std::string case_name(const ::testing::TestParamInfo<FormatCase>& info) { return info.param.label; }

// A deterministic weight with a spread of magnitudes and signs, rounded to BF16.
std::vector<float> source_weight() {
  std::vector<float> values(kRows * kCols);
  std::uint32_t state = 12345;
  for (auto& value : values) {
    state = state * 1664525u + 1013904223u;
    value = (static_cast<float>(state >> 8) / 16777216.0f - 0.5f) * 0.1f;
  }
  std::vector<std::byte> bf16(values.size() * 2);
  encode_from_f32(DType::BF16, values, bf16);
  decode_to_f32(DType::BF16, bf16, values);
  return values;
}

struct StoredTensor {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};

// The module's tensors as libquant's writer for the case lays them out.
std::vector<StoredTensor> encode(const FormatCase& c, std::span<const float> weight) {
  const WeightFormat& format = weight_format(c.layout);
  WeightEncoding encoding;
  encoding.integer = c.integer;
  const auto specs = format.output_specs(kModule, kRows, kCols, encoding);
  std::vector<std::byte> source(weight.size() * 2);
  encode_from_f32(DType::BF16, weight, source);
  std::vector<StoredTensor> tensors;
  for (const auto& spec : specs)
    tensors.push_back({spec, std::vector<std::byte>(spec.byte_size())});
  if (c.action == RecipeAction::Keep) {
    tensors.front().bytes = source;
    return tensors;
  }
  QuantizeRequest request;
  request.action = c.action;
  request.format = c.config;
  request.scale_method = "max";
  request.integer = c.integer;
  QuantizerSettings settings;
  settings.device = ComputeDevice::Cpu;
  const auto transform = make_quantize_transform(request, settings);
  const TensorInfo info{kModule + ".weight", DType::BF16, {kRows, kCols}, 0, source.size()};
  const std::vector<SourceTensor> sources{{&info, source}};
  std::vector<std::span<std::byte>> outputs;
  for (auto& tensor : tensors) outputs.emplace_back(tensor.bytes);
  transform->run(sources, outputs);
  return tensors;
}

// config.json declaring the module as the case's format (none for a float one).
nlohmann::json config_for(const FormatCase& c) {
  nlohmann::json config = {{"model_type", "registry_test"}};
  QuantizedModel model;
  if (c.action == RecipeAction::Nvfp4) model.nvfp4_modules = {kModule};
  if (c.action == RecipeAction::Int) model.integer_groups = {{c.integer, false, {kModule}}};
  if (c.action == RecipeAction::Keep) return config;
  if (c.action == RecipeAction::Fp8Block) {  // DeepSeek's own config, whatever the convention
    config["quantization_config"] = fp8_block_config_block({});
    return config;
  }
  config["quantization_config"] = c.config == OutputFormat::Modelopt
                                      ? modelopt_config_block(model)
                                      : compressed_tensors_config_block(model);
  return config;
}

void write_checkpoint(const std::filesystem::path& directory,
                      const std::vector<StoredTensor>& tensors, const nlohmann::json& config) {
  std::filesystem::create_directories(directory);
  std::vector<TensorSpec> specs;
  for (const auto& tensor : tensors) specs.push_back(tensor.spec);
  SafetensorsWriter writer(directory / "model.safetensors", specs);
  for (const auto& tensor : tensors) writer.write_tensor(tensor.spec.name, tensor.bytes);
  writer.commit();
  std::ofstream(directory / "config.json") << config.dump(2);
}

double relative_error(std::span<const float> decoded, std::span<const float> reference) {
  double error = 0.0, energy = 0.0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    error += (decoded[i] - reference[i]) * static_cast<double>(decoded[i] - reference[i]);
    energy += reference[i] * static_cast<double>(reference[i]);
  }
  return std::sqrt(error / energy);
}

std::string findings_text(const ValidationReport& report) {
  std::string text;
  for (const auto& finding : report.findings)
    text += finding.kind + " " + finding.tensor + ": " + finding.message + "\n";
  return text;
}

// A dtype of the same width the format does not accept where `dtype` is expected.
DType other_dtype(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return DType::I32;
    case DType::I32:
      return DType::F32;
    case DType::F8_E4M3:
      return DType::U8;
    case DType::U8:
      return DType::I8;
    case DType::I64:
      return DType::F64;
    default:
      return DType::I16;  // BF16 / F16 scales
  }
}

TEST(RegistryCoverage, EveryRegisteredFormatHasACaseOrIsDetectedOnly) {
  for (const auto* format : weight_formats()) {
    const bool has_case = std::any_of(std::begin(kCases), std::end(kCases),
                                      [&](const auto& c) { return c.layout == format->layout; });
    const bool detected_only = std::find(std::begin(kDetectedOnly), std::end(kDetectedOnly),
                                         format->layout) != std::end(kDetectedOnly);
    const bool elsewhere = std::find(std::begin(kTestedElsewhere), std::end(kTestedElsewhere),
                                     format->layout) != std::end(kTestedElsewhere);
    EXPECT_TRUE(has_case || elsewhere ||
                (detected_only && !format->decodable() && !format->output_specs))
        << format->name << ": add a line to kCases";
    EXPECT_EQ(&weight_format(format->layout), format) << format->name;
    EXPECT_FALSE(format->parameters.empty()) << format->name;
  }
  EXPECT_STREQ(weight_format(WeightLayout::Unrecognized).name, "unrecognized");
}

TEST(RegistryCoverage, NamesAndConventionsAreTheOnesEnginesRead) {
  const auto& modelopt = weight_format_for(CodeFamily::Nvfp4, OutputFormat::Modelopt);
  const auto& compressed = weight_format_for(CodeFamily::Nvfp4, OutputFormat::CompressedTensors);
  EXPECT_EQ(modelopt.layout, WeightLayout::Nvfp4Modelopt);
  EXPECT_EQ(modelopt.parameter_names(true),
            (std::vector<std::string>{"weight", "weight_scale", "weight_scale_2", "input_scale"}));
  EXPECT_EQ(modelopt.scale_convention, ScaleConvention::Multiplier);
  EXPECT_EQ(compressed.parameter_names(true),
            (std::vector<std::string>{"weight_packed", "weight_scale", "weight_global_scale",
                                      "input_global_scale"}));
  EXPECT_EQ(compressed.scale_convention, ScaleConvention::Reciprocal);
  EXPECT_EQ(weight_format(WeightLayout::PackQuantized).parameter_names(true),
            (std::vector<std::string>{"weight_packed", "weight_scale", "weight_shape",
                                      "weight_zero_point"}));
  for (const char* name : {"weight", "weight_packed", "weight_scale", "weight_scale_2",
                           "weight_global_scale", "weight_shape", "weight_zero_point"})
    EXPECT_NE(std::find(weight_parameter_names().begin(), weight_parameter_names().end(), name),
              weight_parameter_names().end())
        << name;
}

class WeightFormats : public ::testing::TestWithParam<FormatCase> {
 protected:
  const FormatCase& format_case() const { return GetParam(); }
  const WeightFormat& format() const { return weight_format(GetParam().layout); }

  // The case's checkpoint with `edit` applied to each tensor (false: drop it).
  std::filesystem::path checkpoint(const std::string& name,
                                   const testing::TensorEdit& edit = testing::kUnchanged) {
    std::vector<StoredTensor> kept;
    for (auto& tensor : encode(format_case(), weight_)) {
      EditableTensor editable{tensor.spec, tensor.bytes};
      if (edit(editable)) kept.push_back({editable.spec, editable.bytes});
    }
    const auto directory = scratch_.path() / name;
    write_checkpoint(directory, kept, config_for(format_case()));
    return directory;
  }

  std::vector<float> weight_ = source_weight();
  ScratchDirectory scratch_{"weight-formats"};
};

TEST_P(WeightFormats, EncodeDetectDecodeLoadValidate) {
  const auto path = checkpoint("encoded");
  const auto stored = Checkpoint::open(path);
  const auto modules = modules_of(stored);
  ASSERT_EQ(modules.count(kModule), 1u);
  const auto& parameters = modules.at(kModule);

  const WeightFormat& detected = detect_weight_format(parameters);
  EXPECT_EQ(detected.layout, format_case().layout) << detected.name;
  ASSERT_TRUE(detected.logical_shape);
  EXPECT_EQ(detected.logical_shape(parameters), (Shape{kRows, kCols}));

  // Decode through the registry's check and libquant's decoder table.
  std::vector<float> decoded(kRows * kCols);
  if (detected.decodable()) {
    const auto weight = detected.check(kModule, parameters, 0, "test.bad_weight");
    EXPECT_EQ(weight.request.rows, kRows);
    EXPECT_EQ(weight.request.cols, kCols);
    std::vector<std::vector<std::byte>> bytes;
    std::vector<SourceTensor> sources;
    for (const auto& location : weight.sources)
      bytes.push_back(location.shard->read(*location.info));
    for (std::size_t i = 0; i < bytes.size(); ++i)
      sources.push_back({weight.sources[i].info, bytes[i]});
    dequantize_weight(weight.request, sources, decoded);
  } else {
    const auto& location = parameters.at("weight");
    decode_to_f32(location.info->dtype, location.shard->read(*location.info), decoded);
  }
  const double error = relative_error(decoded, weight_);
  EXPECT_LE(error, format_case().max_relative_error);
  if (format_case().max_relative_error > 0.0) {
    EXPECT_GT(error, 0.0);  // it did quantize
  }

  // The runner loads the same values, bit for bit.
  const run::WeightLoader loader(stored);
  const auto matrix = loader.linear(kModule);
  EXPECT_EQ(matrix.rows, kRows);
  EXPECT_EQ(matrix.cols, kCols);
  ASSERT_EQ(matrix.values.size(), decoded.size());
  EXPECT_EQ(std::memcmp(matrix.values.data(), decoded.data(), decoded.size() * sizeof(float)), 0);

  // validate finds no problem, and --ref's comparison decodes it within the bound.
  const auto reference_path = scratch_.path() / "reference";
  std::vector<StoredTensor> reference_tensors{{{kModule + ".weight", DType::BF16, {kRows, kCols}},
                                               std::vector<std::byte>(kRows * kCols * 2)}};
  encode_from_f32(DType::BF16, weight_, reference_tensors[0].bytes);
  write_checkpoint(reference_path, reference_tensors, {{"model_type", "registry_test"}});
  const auto reference = Checkpoint::open(reference_path);
  auto report = validate_checkpoint(stored, {});
  const auto comparisons = validate_nvfp4(stored, {&reference, 0.2}, report);
  EXPECT_FALSE(report.has_problems()) << findings_text(report);
  if (detected.decodable()) {
    EXPECT_EQ(comparisons.size(), 1u) << findings_text(report);
  }
}

TEST_P(WeightFormats, BrokenCompanionsAreRefusedNamingTheTensor) {
  const auto& parameters = format().parameters;
  struct Broken {
    std::string what;
    std::string tensor;
    testing::TensorEdit edit;
  };
  std::vector<Broken> cases;
  for (std::size_t i = 1; i < parameters.size(); ++i) {
    const std::string tensor = kModule + "." + parameters[i];
    cases.push_back({"missing " + parameters[i], tensor,
                     [tensor](EditableTensor& t) { return t.spec.name != tensor; }});
    cases.push_back({"wrong dtype of " + parameters[i], tensor, [tensor](EditableTensor& t) {
                       if (t.spec.name == tensor) t.spec.dtype = other_dtype(t.spec.dtype);
                       return true;
                     }});
  }
  if (format().stores("weight_shape")) {
    const std::string tensor = kModule + ".weight_shape";
    cases.push_back({"I32 weight_shape", tensor, [tensor](EditableTensor& t) {
                       if (t.spec.name == tensor) {
                         const std::int32_t dims[2] = {static_cast<std::int32_t>(kRows),
                                                       static_cast<std::int32_t>(kCols)};
                         t.spec.dtype = DType::I32;
                         t.bytes.resize(sizeof dims);
                         std::memcpy(t.bytes.data(), dims, sizeof dims);
                       }
                       return true;
                     }});
    cases.push_back({"weight_shape of three values", tensor, [tensor](EditableTensor& t) {
                       if (t.spec.name == tensor) {
                         t.spec.shape = {3};
                         t.bytes.resize(3 * sizeof(std::int64_t));
                       }
                       return true;
                     }});
  }
  if (parameters.size() == 1) GTEST_SKIP() << format().name << " has no companions";
  int number = 0;
  for (const auto& broken : cases) {
    const auto path = checkpoint("broken-" + std::to_string(number++), broken.edit);
    const auto stored = Checkpoint::open(path);
    const run::WeightLoader loader(stored);
    try {
      loader.linear(kModule);
      ADD_FAILURE() << broken.what << ": loaded";
    } catch (const Error& error) {
      EXPECT_EQ(error.error_class(), ErrorClass::BadInput) << broken.what;
      EXPECT_EQ(error.kind(), "run.bad_quantized_weight") << broken.what << ": " << error.what();
      EXPECT_TRUE(error.tensor().starts_with(kModule + "."))
          << broken.what << ": " << error.tensor();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, WeightFormats, ::testing::ValuesIn(kCases), case_name);

// The same through the CLI on the bundled model written in each format: exit 2, one line
// naming the file and the tensor, nothing else.
class WeightFormatsCli : public ::testing::TestWithParam<FormatCase> {
 protected:
  static void SetUpTestSuite() {
    outputs_ = std::make_unique<testing::QuantizedOutputs>("formats-cli");
  }
  static void TearDownTestSuite() { outputs_.reset(); }
  static inline std::unique_ptr<testing::QuantizedOutputs> outputs_;
};

TEST_P(WeightFormatsCli, GenerateRefusesABrokenCompanionWithOneLine) {
  const FormatCase& c = GetParam();
  if (!c.quantize_arguments) GTEST_SKIP() << "the bundled model is already " << c.label;
  const std::string module = "model.layers.1.mlp.experts.3.up_proj";
  outputs_->quantize(c.label, c.quantize_arguments);
  const auto& parameters = weight_format(c.layout).parameters;
  for (std::size_t i = 1; i < parameters.size(); ++i) {
    const std::string tensor = module + "." + parameters[i];
    for (const bool drop : {false, true}) {
      const auto broken = outputs_->broken_copy(c.label, [&](EditableTensor& t) {
        if (t.spec.name == tensor && !drop) t.spec.dtype = other_dtype(t.spec.dtype);
        return !(drop && t.spec.name == tensor);
      });
      const auto result =
          testing::run_cli("generate " + quoted(broken) + " --prompt x --max-new 1");
      const std::string what = (drop ? "missing " : "wrong dtype of ") + tensor;
      EXPECT_EQ(result.exit_code, 2) << what << "\n" << result.output;
      // The layout check or the format's own check names the module's tensor at fault (the
      // broken companion, or the code tensor whose shape it no longer explains) and the file.
      EXPECT_NE(result.output.find("tensor '" + module + "."), std::string::npos) << what << "\n"
                                                                                  << result.output;
      EXPECT_NE(result.output.find(broken.string()), std::string::npos) << what << "\n"
                                                                        << result.output;
      EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << what << "\n"
                                                                                 << result.output;
      EXPECT_EQ(result.output.find("internal error"), std::string::npos) << result.output;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, WeightFormatsCli, ::testing::ValuesIn(kCases), case_name);

}  // namespace
}  // namespace qs
