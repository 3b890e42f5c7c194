// The CPU integer quantizer: oneTBB over rows; per group the codes in one vectorisable pass,
// then the error and signal sums in element order (the reference's order, so the f32 sums are
// bit-identical). Per-group sums are stored and added in (row, group) order afterwards, so the
// result does not depend on how TBB splits the rows.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <vector>

#include "qs/quant/int_quantizer.h"

namespace qs::intq::detail {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_VECTOR_CLONES
#endif

QS_VECTOR_CLONES void encode_group(const float* values, std::uint64_t width, GroupParams params,
                                   IntFormat format, DType dtype, std::int8_t* codes,
                                   float* decoded) {
  for (std::uint64_t i = 0; i < width; ++i) {
    const int code = quantize_value(values[i], params, format, dtype);
    codes[i] = static_cast<std::int8_t>(code);
    decoded[i] = dequantize_value(code, params, dtype);
  }
}

}  // namespace

ErrorEnergy quantize_cpu(const WeightView& weight, const IntScheme& scheme, IntQuantized& out) {
  const std::uint64_t width = scheme.group_width(weight.cols);
  const std::uint64_t groups = scheme.groups(weight.cols);
  std::vector<float> group_signal(weight.rows * groups), group_error(weight.rows * groups);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, weight.rows, 16),
                    [&](const tbb::blocked_range<std::uint64_t>& range) {
    std::vector<float> row(weight.cols), decoded(width);
    for (std::uint64_t r = range.begin(); r != range.end(); ++r) {
      fp4::detail::decode_row(weight, r, row.data());
      for (std::uint64_t g = 0; g < groups; ++g) {
        const float* values = row.data() + g * width;
        const GroupParams params = observe_group(values, static_cast<int>(width), scheme.format,
                                                 weight.dtype, scheme.observer);
        const std::uint64_t slot = r * groups + g;
        out.scales[slot] = params.scale;
        out.zeros[slot] = static_cast<std::int8_t>(params.zero);
        encode_group(values, width, params, scheme.format, weight.dtype,
                     out.codes.data() + r * weight.cols + g * width, decoded.data());
        float signal = 0.0f, error = 0.0f;
        for (std::uint64_t i = 0; i < width; ++i) {
          const float difference = values[i] - decoded[i];
          signal += values[i] * values[i];
          error += difference * difference;
        }
        group_signal[slot] = signal;
        group_error[slot] = error;
      }
    }
  });
  ErrorEnergy energy;
  for (std::uint64_t i = 0; i < group_signal.size(); ++i) {
    energy.signal += group_signal[i];
    energy.error += group_error[i];
  }
  return energy;
}

}  // namespace qs::intq::detail
