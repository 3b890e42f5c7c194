#include "pack_quantized_checks.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/formats/compressed_tensors_config.h"
#include "qs/ckpt/model/name_pattern.h"
#include "qs/ckpt/formats/packed_int32.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/quant/int_quantizer.h"

namespace qs::validation {
namespace {

constexpr const char* kIntCheck = "int";

// config.json's compressed-tensors block; nullopt (with a finding when it exists but cannot be
// used) otherwise, and the bit width then comes from the tensors alone.
std::optional<CompressedTensorsConfig> read_int_config(const Checkpoint& checkpoint,
                                                       ValidationReport& report) {
  const auto& config = checkpoint.config();
  if (!config.is_object() || !config.contains("quantization_config")) return std::nullopt;
  const std::string file = (checkpoint.directory() / "config.json").string();
  const auto& block = config.at("quantization_config");
  const auto method = block.is_object() ? block.value("quant_method", std::string()) : "";
  if (method != "compressed-tensors") {
    report.add(Severity::Problem, kIntCheck, "int.config_mismatch",
               fmt::format("quant_method is \"{}\", but pack-quantized tensors need "
                           "\"compressed-tensors\"",
                           method),
               file);
    return std::nullopt;
  }
  try {
    return parse_compressed_tensors_config(block);
  } catch (const std::exception& error) {  // nlohmann type errors, unparsable patterns
    report.add(Severity::Problem, kIntCheck, "int.config_mismatch",
               fmt::format("quantization_config cannot be read: {}", error.what()), file);
    return std::nullopt;
  }
}

// Modules with an I32 weight_packed or a weight_shape (so one that lost its codes is still
// seen); NVFP4 compressed-tensors modules (U8 weight_packed + global scale) are not ours.
std::map<std::string, PackQuantizedModule> find_int_modules(const Checkpoint& checkpoint,
                                                            const std::set<std::string>& nvfp4) {
  std::map<std::string, PackQuantizedModule> modules;
  for (const auto& location : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    const bool marks =
        parsed.parameter == TensorParameter::WeightShape ||
        (parsed.parameter == TensorParameter::WeightPacked && location.info->dtype == DType::I32);
    if (marks && !nvfp4.contains(parsed.module_path)) modules[parsed.module_path];
  }
  for (const auto& location : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    const auto found = modules.find(parsed.module_path);
    if (found == modules.end()) continue;
    auto& module = found->second;
    switch (parsed.parameter) {
      case TensorParameter::WeightPacked:
        module.packed = location;
        break;
      case TensorParameter::WeightScale:
        module.scales = location;
        break;
      case TensorParameter::WeightShape:
        module.shape = location;
        break;
      case TensorParameter::WeightZeroPoint:
        module.zeros = location;
        break;
      default:
        break;
    }
  }
  return modules;
}

std::uint32_t read_word(std::span<const std::byte> bytes, std::uint64_t index) {
  std::uint32_t word = 0;
  std::memcpy(&word, bytes.data() + index * 4, 4);
  return word;
}

// Whether a stream of `count` b-bit fields in `words` consecutive words (`stride` apart from
// `first`) has bits set outside its fields: the top 32 mod b bits of every word, and the
// unused fields of the last one (packed_int32.h). The packer writes zeros there; anything
// else is a writer bug or corruption.
bool has_padding_bits(std::span<const std::byte> bytes, std::uint64_t first, std::uint64_t stride,
                      std::uint64_t count, int bits) {
  const auto per_word = static_cast<std::uint64_t>(packed_values_per_word(bits));
  const std::uint64_t words = packed_words(count, bits);
  for (std::uint64_t w = 0; w < words; ++w) {
    const std::uint64_t fields =
        w + 1 < words || count % per_word == 0 ? per_word : count % per_word;
    const std::uint64_t used = fields * static_cast<std::uint64_t>(bits);
    if (used < 32 && (read_word(bytes, first + w * stride) >> used) != 0) return true;
  }
  return false;
}

// Whether streams of `count` b-bit fields can hold padding at all.
bool can_have_padding(std::uint64_t count, int bits) {
  const auto per_word = static_cast<std::uint64_t>(packed_values_per_word(bits));
  return per_word * bits != 32 || count % per_word != 0;
}

// Dtypes and shapes, against each other and the bit width; fills module.bits/rows/cols/groups.
// Returns false when the tensors cannot be decoded.
bool check_int_layout(const std::string& module_path, PackQuantizedModule& module,
                      const ConfigGroupArguments* group, ValidationReport& report) {
  bool usable = true;
  auto missing = [&](const char* parameter) {
    report.add(Severity::Problem, kIntCheck, "int.missing_tensor",
               fmt::format("pack-quantized module without its {}", parameter), {},
               module_path + "." + parameter);
    usable = false;
  };
  if (!module.packed) missing("weight_packed");
  if (!module.scales) missing("weight_scale");
  if (!module.shape) missing("weight_shape");
  if (!usable) return false;

  auto dtype_problem = [&](const TensorLocation& location, const char* expected) {
    report.add(Severity::Problem, kIntCheck, "int.dtype_mismatch",
               fmt::format("stored as {}, pack-quantized needs {}",
                           dtype_name(location.info->dtype), expected),
               location.shard->path().string(), location.info->name);
    usable = false;
  };
  if (module.packed->info->dtype != DType::I32) dtype_problem(*module.packed, "I32");
  if (module.shape->info->dtype != DType::I64) dtype_problem(*module.shape, "I64");
  if (module.zeros && module.zeros->info->dtype != DType::I32) dtype_problem(*module.zeros, "I32");
  const DType scale_dtype = module.scales->info->dtype;
  if (scale_dtype != DType::BF16 && scale_dtype != DType::F16 && scale_dtype != DType::F32)
    dtype_problem(*module.scales, "the model's float dtype (BF16, F16 or F32)");
  if (!usable) return false;

  auto shape_problem = [&](const TensorLocation& location, const std::string& message) {
    report.add(Severity::Problem, kIntCheck, "int.shape_mismatch", message,
               location.shard->path().string(), location.info->name);
    usable = false;
  };
  const Shape& packed = module.packed->info->shape;
  const Shape& scales = module.scales->info->shape;
  auto expected_shape = [&](const TensorLocation& location, const char* expected) {
    shape_problem(location, fmt::format("shape {}, expected {}",
                                        shape_to_string(location.info->shape), expected));
  };
  if (module.shape->info->shape != Shape{2}) expected_shape(*module.shape, "[2] = [N, K]");
  if (packed.size() != 2) expected_shape(*module.packed, "[N, ⌈K/⌊32/bits⌋⌉]");
  if (scales.size() != 2) expected_shape(*module.scales, "[N, groups]");
  if (!usable) return false;
  std::int64_t dims[2];  // checked above: I64 [2]
  std::memcpy(dims, module.shape->shard->read(*module.shape->info).data(), sizeof(dims));
  if (dims[0] <= 0 || dims[1] <= 0 || static_cast<std::uint64_t>(dims[0]) != packed[0]) {
    shape_problem(*module.shape, fmt::format("[{}, {}], but weight_packed is {}", dims[0], dims[1],
                                             shape_to_string(packed)));
    return false;
  }
  module.rows = static_cast<std::uint64_t>(dims[0]);
  module.cols = static_cast<std::uint64_t>(dims[1]);
  // The width the packed tensor was written with: stated by the config group, else the one
  // whose ⌈K/⌊32/b⌋⌉ words make up a row, trying the widths engines read first (for K < 32
  // several widths give one word count).
  int fitting = 0;
  for (int b : {4, 8, 2, 3, 5, 6, 7})
    if (fitting == 0 && intq::packed_shapes(module.rows, module.cols, b).words_per_row == packed[1])
      fitting = b;
  module.bits = group ? group->bits : fitting;
  if (group && (group->bits < 2 || group->bits > 8)) {
    report.add(Severity::Problem, kIntCheck, "int.config_mismatch",
               fmt::format("config group {} has num_bits {}; pack-quantized holds 2..8",
                           group->name, group->bits),
               module.packed->shard->path().string(), module.packed->info->name);
    return false;
  }
  if (module.bits == 0) {
    shape_problem(*module.shape,
                  fmt::format("[{}, {}], but no 2..8-bit packing of {} inputs "
                              "gives weight_packed {}",
                              module.rows, module.cols, module.cols, shape_to_string(packed)));
    return false;
  }
  const auto expected = intq::packed_shapes(module.rows, module.cols, module.bits);
  if (packed[1] != expected.words_per_row) {
    // Only with a config group (an inferred width fits by construction); either weight_shape
    // or num_bits is wrong, and which one the tensors alone cannot tell.
    shape_problem(*module.shape,
                  fmt::format("[{}, {}], so the {}-bit codes of config group {} need "
                              "weight_packed [{}, {}], but it is {}{}",
                              module.rows, module.cols, module.bits, group->name, module.rows,
                              expected.words_per_row, shape_to_string(packed),
                              fitting ? fmt::format(" (that fits {}-bit codes)", fitting) : ""));
    return false;
  }
  module.groups = scales[1];
  if (scales[0] != module.rows || module.groups == 0 || module.cols % module.groups != 0)
    shape_problem(*module.scales, fmt::format("shape {}, expected [{}, G] with G dividing {}",
                                              shape_to_string(scales), module.rows, module.cols));
  if (module.zeros && module.zeros->info->shape != Shape{expected.zero_point_rows, module.groups})
    shape_problem(*module.zeros,
                  fmt::format("shape {}, expected [{}, {}] ({} {}-bit zero points per group, "
                              "packed along the output dimension)",
                              shape_to_string(module.zeros->info->shape), expected.zero_point_rows,
                              module.groups, module.rows, module.bits));
  return usable;
}

// What the config group says against what the tensors hold: format, symmetry (zero points),
// number of groups. The tensors stay decodable, so the comparison still runs.
void check_int_config(const std::string& module_path, const PackQuantizedModule& module,
                      const ConfigGroupArguments* group, ValidationReport& report) {
  const auto& packed = *module.packed;
  auto mismatch = [&](const std::string& message, const std::string& file,
                      const std::string& tensor) {
    report.add(Severity::Problem, kIntCheck, "int.config_mismatch", message, file, tensor);
  };
  if (!group) {
    mismatch(
        "stored pack-quantized, but quantization_config ignores it or no config group "
        "targets it",
        packed.shard->path().string(), packed.info->name);
    return;
  }
  if (group->format != "pack-quantized" || group->type != "int") {
    mismatch(fmt::format("stored pack-quantized, but its config group {} has format \"{}\" and "
                         "weights of type \"{}\"",
                         group->name, group->format, group->type),
             packed.shard->path().string(), packed.info->name);
    return;
  }
  if (group->symmetric && module.zeros)
    mismatch(fmt::format("zero points stored, but config group {} is symmetric", group->name),
             module.zeros->shard->path().string(), module.zeros->info->name);
  if (!group->symmetric && !module.zeros)
    mismatch(fmt::format("no zero points, but config group {} is asymmetric", group->name), {},
             module_path + ".weight_zero_point");
  const std::string scale_file = module.scales->shard->path().string();
  const std::string& scale_name = module.scales->info->name;
  std::uint64_t expected = 0;
  if (group->strategy == "channel") {
    expected = 1;
  } else if (group->strategy == "group" && group->group_size > 0) {
    expected = (module.cols + group->group_size - 1) / group->group_size;
  } else {
    mismatch(fmt::format("config group {} has strategy \"{}\" with group_size {}; "
                         "pack-quantized scales are per group (group_size > 0) or per channel",
                         group->name, group->strategy, group->group_size),
             scale_file, scale_name);
    return;
  }
  if (expected != module.groups)
    mismatch(
        fmt::format("{} scale group(s) per row, but config group {} ({}) needs {} for {} "
                    "inputs",
                    module.groups, group->name,
                    group->strategy == "channel" ? std::string("channel")
                                                 : fmt::format("group_size {}", group->group_size),
                    expected, module.cols),
        scale_file, scale_name);
}

// Scales finite and positive (compressed-tensors stores eps for an all-zero group, never 0)
// and the padding past each stream's last field zero. Reads the scales, and the codes or zero
// points only when their streams have padding (not for widths dividing 32 words evenly).
void check_int_data(const PackQuantizedModule& module, ValidationReport& report) {
  const auto& scales_location = *module.scales;
  std::vector<float> scales(scales_location.info->element_count());
  decode_to_f32(scales_location.info->dtype, scales_location.shard->read(*scales_location.info),
                scales);
  std::size_t non_finite = 0, non_positive = 0;
  for (float scale : scales) {
    non_finite += std::isfinite(scale) ? 0 : 1;
    non_positive += std::isfinite(scale) && scale <= 0.0f ? 1 : 0;
  }
  if (non_finite || non_positive)
    report.add(Severity::Problem, kIntCheck, "int.bad_scale",
               fmt::format("{} non-finite and {} non-positive scale(s) of {}", non_finite,
                           non_positive, scales.size()),
               scales_location.shard->path().string(), scales_location.info->name);

  const auto shapes = intq::packed_shapes(module.rows, module.cols, module.bits);
  auto padding = [&](const TensorLocation& location, std::size_t streams, const char* what) {
    report.add(
        Severity::Problem, kIntCheck, "int.padding",
        fmt::format("{} {} with bits set past the last {}-bit field", streams, what, module.bits),
        location.shard->path().string(), location.info->name);
  };
  if (can_have_padding(module.cols, module.bits)) {
    const auto packed = module.packed->shard->read(*module.packed->info);
    std::size_t rows = 0;
    for (std::uint64_t r = 0; r < module.rows; ++r)
      rows += has_padding_bits(packed, r * shapes.words_per_row, 1, module.cols, module.bits);
    if (rows) padding(*module.packed, rows, "row(s)");
  }
  if (module.zeros && can_have_padding(module.rows, module.bits)) {
    // Zero points are packed along the output dimension: group g's stream is column g of the
    // [zero_point_rows, groups] tensor.
    const auto zeros = module.zeros->shard->read(*module.zeros->info);
    std::size_t groups = 0;
    for (std::uint64_t g = 0; g < module.groups; ++g)
      groups += has_padding_bits(zeros, g, module.groups, module.rows, module.bits);
    if (groups) padding(*module.zeros, groups, "zero-point column(s)");
  }
}

}  // namespace

std::map<std::string, PackQuantizedModule> check_pack_quantized(
    const Checkpoint& checkpoint, const std::set<std::string>& nvfp4_modules,
    ValidationReport& report) {
  auto modules = find_int_modules(checkpoint, nvfp4_modules);
  if (modules.empty()) return modules;
  report.checks_run.push_back(kIntCheck);
  const auto config = read_int_config(checkpoint, report);
  for (auto& [path, module] : modules) {
    const ConfigGroupArguments* group = config ? covering_group(*config, path) : nullptr;
    // Only a pack-quantized group's num_bits says how the codes were packed.
    const bool states_bits = group && group->format == "pack-quantized" && group->type == "int";
    module.decodable = check_int_layout(path, module, states_bits ? group : nullptr, report);
    if (!module.decodable) continue;
    if (config) check_int_config(path, module, group, report);
    check_int_data(module, report);
  }
  return modules;
}

}  // namespace qs::validation
