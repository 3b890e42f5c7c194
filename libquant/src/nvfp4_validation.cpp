#include "qs/quant/nvfp4_validation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/ckpt/io/checked_tensor.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/quant/dequantize_transform.h"
#include "validation/config_coverage.h"
#include "validation/fp8_block_checks.h"
#include "validation/vq_checks.h"
#include "validation/pack_quantized_checks.h"

namespace qs {
namespace {

constexpr const char* kCheck = "nvfp4";
constexpr const char* kReferenceCheck = "reference";

// The NVFP4 layout a parameter name marks: a code tensor or global scale named as only one
// layout names it ("weight_packed", "weight_global_scale"); nullptr for names the layouts
// share ("weight_scale") or that are not NVFP4's.
const WeightFormat* nvfp4_layout_marked_by(const std::string& parameter) {
  const WeightFormat& modelopt = weight_format_for(CodeFamily::Nvfp4, OutputFormat::Modelopt);
  for (const auto* format : weight_formats())
    if (format->codes == CodeFamily::Nvfp4 && format != &modelopt &&
        (parameter == format->parameters.front() || parameter == format->global_scale))
      return format;
  return nullptr;
}

bool is_nvfp4_parameter(const std::string& parameter,
                        std::string (*pick)(const WeightFormat& format)) {
  for (const auto* format : weight_formats())
    if (format->codes == CodeFamily::Nvfp4 && pick(*format) == parameter) return true;
  return false;
}

// The NVFP4 tensors of one module, as found.
struct Nvfp4Module {
  // modelopt (weight + weight_scale_2) unless a name only another layout uses says otherwise.
  const WeightFormat* format = &weight_format_for(CodeFamily::Nvfp4, OutputFormat::Modelopt);
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
    const std::string& name = parsed.parameter_name;
    if (is_nvfp4_parameter(name, [](const WeightFormat& f) { return f.global_scale; })) {
      auto& module = modules[parsed.module_path];
      module.global = location;
      if (const auto* marked = nvfp4_layout_marked_by(name)) module.format = marked;
    } else if (is_nvfp4_parameter(name, [](const WeightFormat& f) { return f.parameters[1]; })) {
      block_scales.emplace(parsed.module_path, location);
      if (dtype == DType::F8_E4M3) modules[parsed.module_path].scales = location;
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
    const std::string& name = parsed.parameter_name;
    if (is_nvfp4_parameter(name, [](const WeightFormat& f) { return f.parameters.front(); })) {
      module.codes = location;
      if (const auto* marked = nvfp4_layout_marked_by(name)) module.format = marked;
    } else if (is_nvfp4_parameter(name,
                                  [](const WeightFormat& f) { return f.optional_parameter; })) {
      module.input = location;
    }
  }
  return modules;
}

// Only called once check_module found the scale F32 and scalar; the checked reader still
// refuses anything else rather than read past it.
float read_scalar(const TensorLocation& location) {
  return read_scalar_f32(location, "NVFP4 scale", "nvfp4.shape_mismatch");
}

// Checks one module's tensors; returns false when they are too broken to read further.
bool check_module(const std::string& module_path, const Nvfp4Module& module,
                  ValidationReport& report) {
  const char* codes_name = module.format->parameters[0].c_str();
  const char* scales_name = module.format->parameters[1].c_str();
  const char* global_name = module.format->global_scale.c_str();
  bool usable = true;
  auto missing = [&](const char* parameter) {
    report.add(Severity::Problem, kCheck, "nvfp4.missing_tensor",
               fmt::format("NVFP4 module without its {}", parameter), {},
               module_path + "." + parameter);
    usable = false;
  };
  if (!module.codes) missing(codes_name);
  if (!module.scales) missing(scales_name);
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
                        const std::map<std::string, bool>& usable, ValidationReport& report) {
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
    if (!module.global || !usable.at(path)) continue;  // malformed: check_module reported it
    const auto group = fused_group(parse_tensor_name(path + ".weight"));
    if (!group) continue;
    compare(first_global, group->name, *module.global);
    if (module.input) compare(first_input, group->name, *module.input);
  }
}

// ‖W − Ŵ‖ and ‖W‖, both divided by max |W| before squaring, so weights near the largest
// floats (±3.39e38, whose squares sum past even f64 in a large tensor) give their true ratio.
struct ErrorNorms {
  double signal = 0.0;  // Σ (w / m)²
  double error = 0.0;   // Σ ((w − ŵ) / m)²
  std::uint64_t non_finite = 0;  // decoded values that are NaN or Inf
  double relative_error() const { return signal > 0 ? std::sqrt(error / signal) : 0.0; }
  double snr_db() const { return error > 0 ? 10.0 * std::log10(signal / error) : INFINITY; }
};

ErrorNorms relative_error_norms(std::span<const float> reference, std::span<const float> decoded) {
  ErrorNorms norms;
  double largest = 0.0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    norms.non_finite += std::isfinite(decoded[i]) ? 0 : 1;
    if (std::isfinite(reference[i])) largest = std::max(largest, std::fabs(double{reference[i]}));
  }
  if (norms.non_finite) return norms;
  const double unit = largest > 0.0 ? 1.0 / largest : 1.0;
  for (std::size_t i = 0; i < reference.size(); ++i) {
    const double value = double{reference[i]} * unit;
    const double difference = (double{reference[i]} - double{decoded[i]}) * unit;
    norms.signal += value * value;
    norms.error += difference * difference;
  }
  return norms;
}

std::vector<float> decode_tensor(const TensorLocation& location) {
  std::vector<float> values(location.info->element_count());
  decode_to_f32(location.info->dtype, location.shard->read(*location.info), values);
  return values;
}

// Compares one quantized module's weight [rows, cols], written into its argument by
// `dequantize` (called only once the reference's weight is found and of that shape), with the
// reference's `module.weight`. `format` is "nvfp4" or "int<b>"; `location` the codes tensor.
std::optional<ReferenceComparison> compare_dequantized(
    const std::string& module_path, const std::string& format, const TensorLocation& location,
    std::uint64_t rows, std::uint64_t cols, const std::function<void(std::span<float>)>& dequantize,
    const Checkpoint& reference, const Nvfp4ValidationOptions& options, ValidationReport& report) {
  std::string label = format;
  std::transform(label.begin(), label.end(), label.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  const std::string weight_name = module_path + ".weight";
  const auto original = reference.find(weight_name);
  if (!original) {
    report.add(Severity::Problem, kReferenceCheck, "reference.missing_tensor",
               fmt::format("the reference has no weight for this {} module", label), {},
               weight_name);
    return std::nullopt;
  }
  if (original->info->shape != Shape{rows, cols}) {
    report.add(Severity::Problem, kReferenceCheck, "reference.shape_mismatch",
               fmt::format("{} weight is [{}, {}] but the reference has {}", label, rows, cols,
                           shape_to_string(original->info->shape)),
               original->shard->path().string(), weight_name);
    return std::nullopt;
  }
  std::vector<float> dequantized(rows * cols);
  dequantize(dequantized);
  const auto values = decode_tensor(*original);
  const auto norms = relative_error_norms(values, dequantized);
  if (norms.non_finite) {
    report.add(Severity::Problem, kReferenceCheck, "reference.non_finite_decode",
               fmt::format("{} of its {} values decode to NaN or Inf (a scale times a code "
                           "overflows)",
                           norms.non_finite, dequantized.size()),
               location.shard->path().string(), weight_name);
    return ReferenceComparison{weight_name, INFINITY, -INFINITY, format};
  }
  ReferenceComparison comparison{weight_name, norms.relative_error(), norms.snr_db(), format};
  // An error as large as the weight itself is never a quantization, whatever the limit.
  if (comparison.relative_error >= 1.0)
    report.add(Severity::Problem, kReferenceCheck, "reference.error_too_large",
               fmt::format("dequantized {} weight is {:.4f} away from the reference (relative "
                           "L2): the quantized tensor has lost the weight, whatever the limit",
                           label, comparison.relative_error),
               location.shard->path().string(), weight_name);
  else if (!(comparison.relative_error <= options.max_relative_error))
    report.add(Severity::Problem, kReferenceCheck, "reference.error_too_large",
               fmt::format("dequantized {} weight is {:.4f} away from the reference "
                           "(relative L2; limit {})",
                           label, comparison.relative_error, options.max_relative_error),
               location.shard->path().string(), weight_name);
  return comparison;
}

// The module's weight as the dequantize transform decodes it, from its stored tensors (in
// dequantize_transform.h's order).
void decode_stored(const DequantizeRequest& request, const std::vector<TensorLocation>& stored,
                   std::span<float> out) {
  std::vector<std::vector<std::byte>> bytes;
  std::vector<SourceTensor> sources;
  for (const auto& location : stored) bytes.push_back(location.shard->read(*location.info));
  for (std::size_t i = 0; i < stored.size(); ++i) sources.push_back({stored[i].info, bytes[i]});
  dequantize_weight(request, sources, out);
}

std::optional<ReferenceComparison> compare_quantized(const std::string& module_path,
                                                     const Nvfp4Module& module,
                                                     const Checkpoint& reference,
                                                     const Nvfp4ValidationOptions& options,
                                                     ValidationReport& report) {
  const std::uint64_t rows = module.codes->info->shape[0];
  const std::uint64_t cols = module.codes->info->shape[1] * 2;
  auto dequantize = [&](std::span<float> out) {
    const DequantizeRequest request{module.format->layout, rows, cols};
    decode_stored(request, {*module.codes, *module.scales, *module.global}, out);
  };
  return compare_dequantized(module_path, "nvfp4", *module.codes, rows, cols, dequantize, reference,
                             options, report);
}

// Unpacked and dequantized as consumers decode it; only for modules check_int_layout passed.
std::optional<ReferenceComparison> compare_integer(const std::string& module_path,
                                                   const validation::PackQuantizedModule& module,
                                                   const Checkpoint& reference,
                                                   const Nvfp4ValidationOptions& options,
                                                   ValidationReport& report) {
  auto dequantize = [&](std::span<float> out) {
    const DequantizeRequest request{WeightLayout::PackQuantized, module.rows, module.cols,
                                    module.bits, module.groups};
    std::vector<TensorLocation> stored = {*module.packed, *module.scales, *module.shape};
    if (module.zeros) stored.push_back(*module.zeros);
    decode_stored(request, stored, out);
  };
  return compare_dequantized(module_path, fmt::format("int{}", module.bits), *module.packed,
                             module.rows, module.cols, dequantize, reference, options, report);
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
    check_fused_scales(modules, usable, report);
  }
  std::set<std::string> nvfp4_paths;
  for (const auto& entry : modules) nvfp4_paths.insert(entry.first);
  const auto int_modules = validation::check_pack_quantized(checkpoint, nvfp4_paths, report);
  const auto fp8_modules = validation::check_fp8_block(checkpoint, report);
  const auto vq_modules = validation::check_vq(checkpoint, report);
  validation::check_config_coverage(checkpoint, int_modules, report);
  std::vector<ReferenceComparison> comparisons;
  if (!options.reference) return comparisons;
  report.checks_run.push_back(kReferenceCheck);
  std::set<std::string> vq_codebooks;
  try {
    const auto declaration = VqDeclaration::of(checkpoint);
    for (const auto& [module, declared] : declaration.modules())
      vq_codebooks.insert(declared.codebook);
  } catch (const Error&) {  // the vq check reported it
  }
  for (const auto& location : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(location.info->name);
    // One comparison per quantized module, made at its codes tensor; the companions are not
    // in the reference.
    if (const auto module = int_modules.find(parsed.module_path); module != int_modules.end()) {
      if (parsed.parameter != TensorParameter::WeightPacked || !module->second.decodable) continue;
      if (auto comparison = compare_integer(parsed.module_path, module->second, *options.reference,
                                            options, report))
        comparisons.push_back(std::move(*comparison));
      continue;
    }
    if (const auto fp8 = fp8_modules.find(parsed.module_path); fp8 != fp8_modules.end()) {
      const auto& weight = fp8->second;
      if (weight.sources[0].info != location.info) continue;  // the scale: compared with it
      auto dequantize = [&](std::span<float> out) {
        decode_stored(weight.request, weight.sources, out);
      };
      if (auto comparison = compare_dequantized(parsed.module_path, "fp8-block", location,
                                                weight.request.rows, weight.request.cols,
                                                dequantize, *options.reference, options, report))
        comparisons.push_back(std::move(*comparison));
      continue;
    }
    if (const auto vq = vq_modules.find(parsed.module_path); vq != vq_modules.end()) {
      const auto& weight = vq->second;
      if (weight.sources[0].info != location.info) continue;  // scales: compared with the codes
      auto dequantize = [&](std::span<float> out) {
        decode_stored(weight.request, weight.sources, out);
      };
      Nvfp4ValidationOptions vq_options = options;
      if (!options.limit_vq) vq_options.max_relative_error = 1.0;  // only a lost weight fails
      if (auto comparison = compare_dequantized(parsed.module_path,
                                                "vq/" + weight.request.vq_tier->name, location,
                                                weight.request.rows, weight.request.cols,
                                                dequantize, *options.reference, vq_options, report))
        comparisons.push_back(std::move(*comparison));
      continue;
    }
    // VQ tensors that failed their checks, and the codebooks: nothing in the reference.
    if (parsed.parameter == TensorParameter::VqCodes ||
        parsed.parameter == TensorParameter::VqScales || vq_codebooks.contains(location.info->name))
      continue;
    const auto module = modules.find(parsed.module_path);
    if (module == modules.end()) {
      compare_unquantized(location, *options.reference, report);
      continue;
    }
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
