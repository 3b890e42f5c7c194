#include "qs/quant/nvfp4_layout_conversion.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/weight_format.h"

namespace qs {
namespace {

// Codes pack two E2M1 values per byte; a block scale covers 16 values, i.e. 8 code bytes.
constexpr std::uint64_t kCodeBytesPerBlockScale = 8;

[[noreturn]] void throw_mismatch(const SourceTensor& source, const std::string& expected) {
  throw_bad_input("nvfp4.layout_mismatch",
                  fmt::format("{} {} is not NVFP4's {}", dtype_name(source.info->dtype),
                              shape_to_string(source.info->shape), expected),
                  {}, source.info->name);
}

// The header says what the tensor is; the bytes must be that much (the executor reads what
// the header says, so a disagreement is a bug, but a cheap one to rule out here).
void expect_matrix(const SourceTensor& source, DType dtype, const char* what) {
  const TensorInfo& info = *source.info;
  if (info.dtype != dtype || info.shape.size() != 2 ||
      source.bytes.size() != info.shape[0] * info.shape[1])
    throw_mismatch(source, fmt::format("{} {} [rows, n]", what, dtype_name(dtype)));
}

// Per-tensor scales are one F32, stored as shape [] (modelopt) or [1] (compressed-tensors);
// either is accepted from either layout, as vLLM accepts both.
float read_scalar(const SourceTensor& source) {
  const Shape& shape = source.info->shape;
  const bool scalar_shape = shape.empty() || (shape.size() == 1 && shape[0] == 1);
  if (source.info->dtype != DType::F32 || !scalar_shape || source.bytes.size() != sizeof(float))
    throw_mismatch(source, "per-tensor scale F32 [] or [1]");
  float value = 0.0f;
  std::memcpy(&value, source.bytes.data(), sizeof(float));
  return value;
}

// A scale in one layout is the reciprocal of the other's. Refused when the reciprocal means
// nothing (zero, negative, NaN, Inf) or cannot be held faithfully: a result that overflows to
// Inf or underflows to a subnormal would not come back on the reverse conversion.
float reciprocal_scale(const SourceTensor& source) {
  const float value = read_scalar(source);
  if (!(std::isfinite(value) && value > 0.0f))
    throw_bad_input("nvfp4.bad_global_scale",
                    fmt::format("per-tensor scale {} is not finite and positive", value), {},
                    source.info->name);
  const float reciprocal = 1.0f / value;
  if (!std::isnormal(reciprocal))
    throw_bad_input(
        "nvfp4.bad_global_scale",
        fmt::format("per-tensor scale {} has reciprocal {}, not a normal fp32", value, reciprocal),
        {}, source.info->name);
  return reciprocal;
}

class Nvfp4LayoutConversion final : public Transform {
 public:
  Nvfp4LayoutConversion(OutputFormat from, OutputFormat to, bool with_input_scale)
      : from_(from), to_(to), with_input_scale_(with_input_scale) {}

  std::string describe() const override {
    return fmt::format("nvfp4 layout {}→{}", output_format_name(from_), output_format_name(to_));
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    const std::size_t count = with_input_scale_ ? 4 : 3;
    if (sources.size() != count || outputs.size() != count)
      throw Error(ErrorClass::Internal, "nvfp4.layout_mismatch",
                  fmt::format("layout conversion takes {} tensors, was given {} sources and {} "
                              "outputs",
                              count, sources.size(), outputs.size()));
    const SourceTensor& codes = sources[0];
    const SourceTensor& block_scales = sources[1];
    expect_matrix(codes, DType::U8, "codes");
    expect_matrix(block_scales, DType::F8_E4M3, "block scales");
    if (block_scales.info->shape[0] != codes.info->shape[0] ||
        block_scales.info->shape[1] * kCodeBytesPerBlockScale != codes.info->shape[1])
      throw_mismatch(block_scales, fmt::format("block scales for codes {} (one per 16 values)",
                                               shape_to_string(codes.info->shape)));
    if (outputs[0].size() != codes.bytes.size() || outputs[1].size() != block_scales.bytes.size())
      throw_mismatch(codes, fmt::format("layout of {} code bytes and {} scale bytes",
                                        outputs[0].size(), outputs[1].size()));

    // Check and compute everything before writing, so a refusal leaves no partial output.
    std::vector<float> scales;
    for (std::size_t i = 2; i < count; ++i) {
      if (outputs[i].size() != sizeof(float))
        throw Error(ErrorClass::Internal, "nvfp4.layout_mismatch",
                    "a per-tensor scale output is not one F32", {}, sources[i].info->name);
      scales.push_back(reciprocal_scale(sources[i]));
    }
    std::memcpy(outputs[0].data(), codes.bytes.data(), codes.bytes.size());
    std::memcpy(outputs[1].data(), block_scales.bytes.data(), block_scales.bytes.size());
    for (std::size_t i = 2; i < count; ++i)
      std::memcpy(outputs[i].data(), &scales[i - 2], sizeof(float));
    return {};
  }

 private:
  OutputFormat from_;
  OutputFormat to_;
  bool with_input_scale_;
};

}  // namespace

std::shared_ptr<const Transform> make_nvfp4_layout_conversion(OutputFormat from, OutputFormat to,
                                                              bool with_input_scale) {
  if (from == to)
    throw Error(ErrorClass::Internal, "nvfp4.same_layout",
                fmt::format("NVFP4 layout conversion from {} to itself", output_format_name(from)));
  return std::make_shared<Nvfp4LayoutConversion>(from, to, with_input_scale);
}

std::vector<std::string> nvfp4_layout_tensor_names(const std::string& module, OutputFormat layout,
                                                   bool with_input_scale) {
  // The names live in one place, the layout's descriptor in the weight-format registry.
  std::vector<std::string> names;
  for (const auto& parameter :
       weight_format_for(CodeFamily::Nvfp4, layout).parameter_names(with_input_scale))
    names.push_back(module + "." + parameter);
  return names;
}

}  // namespace qs
