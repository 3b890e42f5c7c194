// The CPU backend: oneTBB over row ranges, each row decoded into a small f32 buffer while it
// is hot in cache. Per-row sums are stored and added in row order afterwards, so the result
// does not depend on how TBB splits the rows.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <vector>

#include "qs/quant/fp4_quantizer.h"

namespace qs::fp4::detail {

ErrorEnergy quantize_cpu(const WeightView& weight, float s2, ScaleMethod method, Fp4Buffers out) {
  const std::uint64_t blocks_per_row = weight.cols / kBlockSize;
  std::vector<ErrorEnergy> per_row(weight.rows);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, weight.rows),
                    [&](const tbb::blocked_range<std::uint64_t>& rows) {
                      std::vector<float> values(weight.cols);
                      for (std::uint64_t r = rows.begin(); r < rows.end(); ++r) {
                        decode_row(weight, r, values.data());
                        ErrorEnergy row;
                        for (std::uint64_t b = 0; b < blocks_per_row; ++b) {
                          const float* block = values.data() + b * kBlockSize;
                          const std::uint64_t index = r * blocks_per_row + b;
                          const std::uint8_t code = choose_scale_code(block, s2, method);
                          out.scale_codes[index] = code;
                          encode_block(block, code, s2, out.packed.data() + index * kBlockSize / 2);
                          row.signal += block_signal(block);
                          row.error += block_squared_error(block, code, s2);
                        }
                        per_row[r] = row;
                      }
                    });
  ErrorEnergy total;
  for (const auto& row : per_row) {
    total.signal += row.signal;
    total.error += row.error;
  }
  return total;
}

}  // namespace qs::fp4::detail
