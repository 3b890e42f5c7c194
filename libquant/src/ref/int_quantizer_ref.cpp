// The reference integer quantizer: every group in row-major order, one element at a time,
// straight from the per-group definitions of int_group.h.

#include <vector>

#include "qs/quant/int_quantizer.h"

namespace qs::intq::detail {

ErrorEnergy quantize_reference(const WeightView& weight, const IntScheme& scheme,
                               IntQuantized& out) {
  const std::uint64_t width = scheme.group_width(weight.cols);
  const std::uint64_t groups = scheme.groups(weight.cols);
  std::vector<float> row(weight.cols);
  ErrorEnergy energy;
  for (std::uint64_t r = 0; r < weight.rows; ++r) {
    fp4::detail::decode_row(weight, r, row.data());
    for (std::uint64_t g = 0; g < groups; ++g) {
      const float* values = row.data() + g * width;
      const GroupParams params = observe_group(values, static_cast<int>(width), scheme.format,
                                               weight.dtype, scheme.observer);
      out.scales[r * groups + g] = params.scale;
      out.zeros[r * groups + g] = static_cast<std::int8_t>(params.zero);
      float signal = 0.0f, error = 0.0f;
      for (std::uint64_t i = 0; i < width; ++i) {
        const int code = quantize_value(values[i], params, scheme.format, weight.dtype);
        out.codes[r * weight.cols + g * width + i] = static_cast<std::int8_t>(code);
        const float difference = values[i] - dequantize_value(code, params, weight.dtype);
        signal += values[i] * values[i];
        error += difference * difference;
      }
      energy.signal += signal;
      energy.error += error;
    }
  }
  return energy;
}

}  // namespace qs::intq::detail
