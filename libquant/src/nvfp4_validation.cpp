#include "qs/quant/nvfp4_validation.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <map>
#include <optional>

#include "qs/ckpt/codecs.h"
#include "qs/ckpt/error.h"
#include "qs/ckpt/tensor_name.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/int_quantizer.h"

namespace qs {
namespace {

constexpr const char* kCheck = "nvfp4";
constexpr const char* kReferenceCheck = "reference";

// The NVFP4 tensors of one module, as found.
struct Nvfp4Module {
  bool modelopt = true;  // weight + weight_scale_2; else weight_packed + weight_global_scale
  std::optional<TensorLocation> codes;
  std::optional<TensorLocation> scales;
  std::optional<TensorLocation> global;
  std::optional<TensorLocation> input;  // input_scale / input_global_scale
};

std::map<std::string, Nvfp4Module> find_nvfp4_modules(const Checkpoint& checkpoint) {
  std::map<std::string, Nvfp4Module> modules;
  std::map<std::string, TensorLocation> block_scales;  // any dtype, for the dtype check
  for (const auto& location : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    const DType dtype = location.info->dtype;
    switch (parsed.parameter) {
      case TensorParameter::WeightScale2:
        modules[parsed.module_path].global = location;
        break;
      case TensorParameter::WeightGlobalScale:
        modules[parsed.module_path].global = location;
        modules[parsed.module_path].modelopt = false;
        break;
      case TensorParameter::WeightScale:
        block_scales.emplace(parsed.module_path, location);
        if (dtype == DType::F8_E4M3) modules[parsed.module_path].scales = location;
        break;
      default:
        break;
    }
  }
  // A module marked NVFP4 by its global scale keeps a block scale of the wrong dtype, so the
  // dtype check (not a "missing" one) reports it.
  for (auto& [path, module] : modules)
    if (!module.scales && block_scales.contains(path)) module.scales = block_scales.at(path);
  // Codes and input scales only for modules that have NVFP4 scales (an I32 weight_packed is
  // pack-quantized INT, a U8 weight without scales is not ours to judge).
  for (const auto& location : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    auto found = modules.find(parsed.module_path);
    if (found == modules.end()) continue;
    auto& module = found->second;
    if (parsed.parameter == TensorParameter::WeightPacked) {
      module.codes = location;
      module.modelopt = false;
    } else if (parsed.parameter == TensorParameter::Weight) {
      module.codes = location;
    } else if (parsed.parameter == TensorParameter::InputScale ||
               parsed.parameter == TensorParameter::InputGlobalScale) {
      module.input = location;
    }
  }
  return modules;
}

float read_scalar(const TensorLocation& location) {
  float value = 0.0f;
  const auto bytes = location.shard->read(*location.info);
  std::memcpy(&value, bytes.data(), sizeof(float));
  return value;
}

bool is_scalar_shape(const Shape& shape) {
  return shape.empty() || (shape.size() == 1 && shape[0] == 1);
}

// Checks one module's tensors; returns false when they are too broken to read further.
bool check_module(const std::string& module_path, const Nvfp4Module& module,
                  ValidationReport& report) {
  const char* codes_name = module.modelopt ? "weight" : "weight_packed";
  const char* global_name = module.modelopt ? "weight_scale_2" : "weight_global_scale";
  bool usable = true;
  auto missing = [&](const char* parameter) {
    report.add(Severity::Problem, kCheck, "nvfp4.missing_tensor",
               fmt::format("NVFP4 module without its {}", parameter), {},
               module_path + "." + parameter);
    usable = false;
  };
  if (!module.codes) missing(codes_name);
  if (!module.scales) missing("weight_scale");
  if (!module.global) missing(global_name);
  if (!usable) return false;

  auto expect_dtype = [&](const TensorLocation& location, DType dtype) {
    if (location.info->dtype == dtype) return;
    report.add(Severity::Problem, kCheck, "nvfp4.dtype_mismatch",
               fmt::format("stored as {}, NVFP4 needs {}", dtype_name(location.info->dtype),
                           dtype_name(dtype)),
               location.shard->path().string(), location.info->name);
    usable = false;
  };
  expect_dtype(*module.codes, DType::U8);
  expect_dtype(*module.scales, DType::F8_E4M3);
  expect_dtype(*module.global, DType::F32);
  if (module.input) expect_dtype(*module.input, DType::F32);
  if (!usable) return false;

  const Shape& codes = module.codes->info->shape;
  const Shape& scales = module.scales->info->shape;
  auto shape_problem = [&](const TensorLocation& location, const std::string& expected) {
    report.add(
        Severity::Problem, kCheck, "nvfp4.shape_mismatch",
        fmt::format("shape {}, expected {}", shape_to_string(location.info->shape), expected),
        location.shard->path().string(), location.info->name);
    usable = false;
  };
  if (codes.size() != 2) {
    shape_problem(*module.codes, "[N, K/2]");
  } else if (scales.size() != 2 || scales[0] != codes[0] || scales[1] * 8 != codes[1]) {
    shape_problem(*module.scales, fmt::format("[{}, {}] (one scale per 16 of the {} inputs)",
                                              codes[0], codes[1] / 8, codes[1] * 2));
  }
  if (!is_scalar_shape(module.global->info->shape)) shape_problem(*module.global, "[] or [1]");
  if (module.input && !is_scalar_shape(module.input->info->shape))
    shape_problem(*module.input, "[] or [1]");
  if (!usable) return false;

  for (const auto* location : {&*module.global, module.input ? &*module.input : nullptr}) {
    if (!location) continue;
    const float value = read_scalar(*location);
    if (!(std::isfinite(value) && value > 0.0f))
      report.add(Severity::Problem, kCheck, "nvfp4.bad_global_scale",
                 fmt::format("scale {} is not a finite positive number", value),
                 location->shard->path().string(), location->info->name);
  }
  const auto block_scales = module.scales->shard->read(*module.scales->info);
  std::size_t nan = 0, negative = 0;
  for (std::byte byte : block_scales) {
    const auto code = static_cast<std::uint8_t>(byte);
    nan += (code & 0x7F) == 0x7F ? 1 : 0;
    negative += (code & 0x80) && (code & 0x7F) != 0x7F ? 1 : 0;
  }
  if (nan || negative)
    report.add(Severity::Problem, kCheck, "nvfp4.bad_block_scale",
               fmt::format("{} NaN and {} negative block scale(s) of {}", nan, negative,
                           block_scales.size()),
               module.scales->shard->path().string(), module.scales->info->name);
  return usable;
}

// Engines fuse these into one GEMM with one global (and input) scale: they must be equal.
void check_fused_scales(const std::map<std::string, Nvfp4Module>& modules,
                        ValidationReport& report) {
  std::map<std::string, std::pair<std::string, std::uint32_t>> first_global, first_input;
  auto compare = [&](auto& seen, const std::string& group, const TensorLocation& location) {
    std::uint32_t bits = 0;
    const float value = read_scalar(location);
    std::memcpy(&bits, &value, 4);
    auto [entry, inserted] = seen.try_emplace(group, location.info->name, bits);
    if (inserted || entry->second.second == bits) return;
    float other = 0.0f;
    std::memcpy(&other, &entry->second.second, 4);
    report.add(Severity::Problem, kCheck, "nvfp4.fused_scale_mismatch",
               fmt::format("{} but {} is {}; engines fuse them ({}) and would dequantize one "
                           "of them wrongly",
                           value, entry->second.first, other, group),
               location.shard->path().string(), location.info->name);
  };
  for (const auto& [path, module] : modules) {
    if (!module.global) continue;
    const auto group = fused_group(parse_tensor_name(path + ".weight"));
    if (!group) continue;
    compare(first_global, group->name, *module.global);
    if (module.input) compare(first_input, group->name, *module.input);
  }
}

std::vector<float> decode_tensor(const TensorLocation& location) {
  std::vector<float> values(location.info->element_count());
  decode_to_f32(location.info->dtype, location.shard->read(*location.info), values);
  return values;
}

std::optional<ReferenceComparison> compare_quantized(const std::string& module_path,
                                                     const Nvfp4Module& module,
                                                     const Checkpoint& reference,
                                                     const Nvfp4ValidationOptions& options,
                                                     ValidationReport& report) {
  const std::string weight_name = module_path + ".weight";
  const auto original = reference.find(weight_name);
  if (!original) {
    report.add(Severity::Problem, kReferenceCheck, "reference.missing_tensor",
               "the reference has no weight for this NVFP4 module", {}, weight_name);
    return std::nullopt;
  }
  const std::uint64_t rows = module.codes->info->shape[0];
  const std::uint64_t cols = module.codes->info->shape[1] * 2;
  if (original->info->shape != Shape{rows, cols}) {
    report.add(Severity::Problem, kReferenceCheck, "reference.shape_mismatch",
               fmt::format("NVFP4 weight is [{}, {}] but the reference has {}", rows, cols,
                           shape_to_string(original->info->shape)),
               original->shard->path().string(), weight_name);
    return std::nullopt;
  }
  const auto codes = module.codes->shard->read(*module.codes->info);
  const auto scales = module.scales->shard->read(*module.scales->info);
  const float global = read_scalar(*module.global);
  const float s2 = module.modelopt ? global : 1.0f / global;
  std::vector<float> dequantized(rows * cols);
  fp4::dequantize({reinterpret_cast<const std::uint8_t*>(codes.data()), codes.size()},
                  {reinterpret_cast<const std::uint8_t*>(scales.data()), scales.size()}, s2, rows,
                  cols, dequantized);
  const auto values = decode_tensor(*original);
  double signal = 0.0, error = 0.0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double difference = static_cast<double>(values[i]) - dequantized[i];
    signal += static_cast<double>(values[i]) * values[i];
    error += difference * difference;
  }
  ReferenceComparison comparison{weight_name, signal > 0 ? std::sqrt(error / signal) : 0.0,
                                 error > 0 ? 10.0 * std::log10(signal / error) : INFINITY};
  if (!(comparison.relative_error <= options.max_relative_error))
    report.add(Severity::Problem, kReferenceCheck, "reference.error_too_large",
               fmt::format("dequantized NVFP4 weight is {:.4f} away from the reference "
                           "(relative L2; limit {})",
                           comparison.relative_error, options.max_relative_error),
               module.codes->shard->path().string(), weight_name);
  return comparison;
}

// A compressed-tensors pack-quantized module (formats-compressed-tensors.md §4.2), compared at
// its weight_packed tensor: unpacked and dequantized as consumers decode it.
std::optional<ReferenceComparison> compare_integer(const std::string& module_path,
                                                   const TensorLocation& packed,
                                                   const Checkpoint& checkpoint,
                                                   const Checkpoint& reference,
                                                   const Nvfp4ValidationOptions& options,
                                                   ValidationReport& report) {
  const std::string weight_name = module_path + ".weight";
  const auto scales = checkpoint.find(module_path + ".weight_scale");
  const auto shape = checkpoint.find(module_path + ".weight_shape");
  const auto zeros = checkpoint.find(module_path + ".weight_zero_point");
  const auto original = reference.find(weight_name);
  const auto bad = [&](const std::string& why) -> std::optional<ReferenceComparison> {
    report.add(Severity::Problem, kReferenceCheck, "int.shape_mismatch", why,
               packed.shard->path().string(), packed.info->name);
    return std::nullopt;
  };
  if (!scales || !shape || shape->info->dtype != DType::I64 || shape->info->element_count() != 2 ||
      scales->info->shape.size() != 2 || packed.info->shape.size() != 2)
    return bad("a pack-quantized module needs weight_scale [N, groups] and weight_shape I64 [2]");
  std::int64_t dims[2];
  std::memcpy(dims, shape->shard->read(*shape->info).data(), sizeof(dims));
  const auto rows = static_cast<std::uint64_t>(dims[0]), cols = static_cast<std::uint64_t>(dims[1]);
  int bits = 0;
  for (int b = 2; b <= 8 && bits == 0; ++b)
    if (intq::packed_shapes(rows, cols, b).words_per_row == packed.info->shape[1]) bits = b;
  const std::uint64_t groups = scales->info->shape[1];
  if (bits == 0 || rows != packed.info->shape[0] || groups == 0 || cols % groups != 0)
    return bad(fmt::format("weight_shape [{}, {}] does not match weight_packed {} and "
                           "weight_scale {}",
                           rows, cols, shape_to_string(packed.info->shape),
                           shape_to_string(scales->info->shape)));
  if (!original) {
    report.add(Severity::Problem, kReferenceCheck, "reference.missing_tensor",
               "the reference has no weight for this pack-quantized module", {}, weight_name);
    return std::nullopt;
  }
  if (original->info->shape != Shape{rows, cols})
    return bad(fmt::format("weight is [{}, {}] but the reference has {}", rows, cols,
                           shape_to_string(original->info->shape)));
  intq::IntQuantized quantized;
  try {
    quantized = intq::unpack(packed.shard->read(*packed.info), scales->shard->read(*scales->info),
                             scales->info->dtype,
                             zeros ? zeros->shard->read(*zeros->info) : std::span<const std::byte>(),
                             rows, cols, groups, bits);
  } catch (const Error& error) {
    return bad(error.detail());
  }
  std::vector<float> dequantized(rows * cols);
  intq::dequantize(quantized, dequantized);
  const auto values = decode_tensor(*original);
  double signal = 0.0, error = 0.0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double difference = static_cast<double>(values[i]) - dequantized[i];
    signal += static_cast<double>(values[i]) * values[i];
    error += difference * difference;
  }
  ReferenceComparison comparison{weight_name, signal > 0 ? std::sqrt(error / signal) : 0.0,
                                 error > 0 ? 10.0 * std::log10(signal / error) : INFINITY};
  if (!(comparison.relative_error <= options.max_relative_error))
    report.add(Severity::Problem, kReferenceCheck, "reference.error_too_large",
               fmt::format("dequantized INT{} weight is {:.4f} away from the reference "
                           "(relative L2; limit {})",
                           bits, comparison.relative_error, options.max_relative_error),
               packed.shard->path().string(), weight_name);
  return comparison;
}

bool is_pack_quantized_tensor(const Checkpoint& checkpoint, const ParsedTensorName& parsed) {
  const auto packed = checkpoint.find(parsed.module_path + ".weight_packed");
  return packed && packed->info->dtype == DType::I32;
}

void compare_unquantized(const TensorLocation& location, const Checkpoint& reference,
                         ValidationReport& report) {
  const auto& name = location.info->name;
  const auto original = reference.find(name);
  if (!original) {
    report.add(Severity::Problem, kReferenceCheck, "reference.missing_tensor",
               "the reference has no such tensor", location.shard->path().string(), name);
    return;
  }
  bool equal = false;
  if (original->info->shape == location.info->shape) {
    if (original->info->dtype == location.info->dtype) {
      equal = original->shard->read(*original->info) == location.shard->read(*location.info);
    } else {
      const auto ours = decode_tensor(location);
      const auto theirs = decode_tensor(*original);
      equal = std::memcmp(ours.data(), theirs.data(), ours.size() * sizeof(float)) == 0;
    }
  }
  if (!equal)
    report.add(
        Severity::Problem, kReferenceCheck, "reference.mismatch",
        fmt::format("kept unquantized but differs from the reference ({} {} vs {} {})",
                    dtype_name(location.info->dtype), shape_to_string(location.info->shape),
                    dtype_name(original->info->dtype), shape_to_string(original->info->shape)),
        location.shard->path().string(), name);
}

}  // namespace

std::vector<ReferenceComparison> validate_nvfp4(const Checkpoint& checkpoint,
                                                const Nvfp4ValidationOptions& options,
                                                ValidationReport& report) {
  const auto modules = find_nvfp4_modules(checkpoint);
  std::map<std::string, bool> usable;
  if (!modules.empty()) {
    report.checks_run.push_back(kCheck);
    for (const auto& [path, module] : modules) usable[path] = check_module(path, module, report);
    check_fused_scales(modules, report);
  }
  std::vector<ReferenceComparison> comparisons;
  if (!options.reference) return comparisons;
  report.checks_run.push_back(kReferenceCheck);
  for (const auto& location : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    const auto module = modules.find(parsed.module_path);
    if (module == modules.end() && is_pack_quantized_tensor(checkpoint, parsed)) {
      if (parsed.parameter != TensorParameter::WeightPacked) continue;
      if (auto comparison = compare_integer(parsed.module_path, location, checkpoint,
                                            *options.reference, options, report))
        comparisons.push_back(std::move(*comparison));
      continue;
    }
    if (module == modules.end()) {
      compare_unquantized(location, *options.reference, report);
      continue;
    }
    // One comparison per NVFP4 module, made at its codes tensor.
    const bool is_codes =
        module->second.codes && module->second.codes->info->name == location.info->name;
    if (!is_codes || !usable[parsed.module_path]) continue;
    if (auto comparison = compare_quantized(parsed.module_path, module->second, *options.reference,
                                            options, report))
      comparisons.push_back(std::move(*comparison));
  }
  return comparisons;
}

}  // namespace qs
