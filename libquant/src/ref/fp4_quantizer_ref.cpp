// The scalar reference: decode the whole matrix, then every block in order. Short on purpose;
// the other backends are held to it bit for bit.

#include <vector>

#include "qs/quant/fp4_quantizer.h"

namespace qs::fp4::detail {

ErrorEnergy quantize_reference(const WeightView& weight, float s2, ScaleMethod method,
                               Fp4Buffers out, const BlockHessians* hessians) {
  std::vector<float> values(weight.rows * weight.cols);
  for (std::uint64_t r = 0; r < weight.rows; ++r)
    decode_row(weight, r, values.data() + r * weight.cols);
  const std::uint64_t blocks_per_row = weight.cols / kBlockSize;
  ErrorEnergy total;
  for (std::uint64_t r = 0; r < weight.rows; ++r) {
    ErrorEnergy row;
    for (std::uint64_t b = 0; b < blocks_per_row; ++b) {
      const std::uint64_t block_index = r * blocks_per_row + b;
      const float* block = values.data() + block_index * kBlockSize;
      const float* hessian = hessians ? hessians->block(b) : nullptr;
      const std::uint8_t code = choose_scale_code<CodecE2M1>(block, s2, method, hessian);
      out.scale_codes[block_index] = code;
      encode_block<CodecE2M1>(block, code, s2, out.packed.data() + block_index * kBlockSize / 2);
      row.signal += block_signal(block);
      row.error += block_squared_error<CodecE2M1>(block, code, s2);
    }
    total.signal += row.signal;
    total.error += row.error;
  }
  return total;
}

}  // namespace qs::fp4::detail
