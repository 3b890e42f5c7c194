#include "qs/quant/nvfp4_layout_conversion.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "qs/ckpt/error.h"

namespace qs {
namespace {

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
                  fmt::format("layout conversion takes {} tensors", count));
    expect(sources[0], DType::U8, outputs[0].size());
    expect(sources[1], DType::F8_E4M3, outputs[1].size());
    std::memcpy(outputs[0].data(), sources[0].bytes.data(), outputs[0].size());
    std::memcpy(outputs[1].data(), sources[1].bytes.data(), outputs[1].size());
    for (std::size_t i = 2; i < count; ++i) write_reciprocal(sources[i], outputs[i]);
    return {};
  }

 private:
  static void expect(const SourceTensor& source, DType dtype, std::size_t bytes) {
    if (source.info->dtype != dtype || source.bytes.size() != bytes)
      throw Error(ErrorClass::BadInput, "nvfp4.layout_mismatch",
                  fmt::format("{} {} of {} bytes, expected {} of {} bytes",
                              dtype_name(source.info->dtype), shape_to_string(source.info->shape),
                              source.bytes.size(), dtype_name(dtype), bytes),
                  {}, source.info->name);
  }

  // Per-tensor scales are one F32, stored as shape [] (modelopt) or [1] (compressed-tensors).
  static void write_reciprocal(const SourceTensor& source, std::span<std::byte> output) {
    expect(source, DType::F32, sizeof(float));
    float value = 0.0f;
    std::memcpy(&value, source.bytes.data(), sizeof(float));
    if (!(std::isfinite(value) && value > 0.0f))
      throw Error(ErrorClass::BadInput, "nvfp4.bad_global_scale",
                  fmt::format("per-tensor scale {} has no meaningful reciprocal", value), {},
                  source.info->name);
    const float reciprocal = 1.0f / value;
    std::memcpy(output.data(), &reciprocal, sizeof(float));
  }

  OutputFormat from_;
  OutputFormat to_;
  bool with_input_scale_;
};

}  // namespace

std::shared_ptr<const Transform> make_nvfp4_layout_conversion(OutputFormat from, OutputFormat to,
                                                              bool with_input_scale) {
  return std::make_shared<Nvfp4LayoutConversion>(from, to, with_input_scale);
}

}  // namespace qs
