// The scalar reference: decode the whole matrix, then every tile in order: its amax, its
// scale, its codes. Short on purpose; the other backends are held to it bit for bit.

#include <algorithm>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/quant/fp8_block_quantizer.h"

namespace qs::fp8::detail {

void quantize_reference(const WeightView& weight, Fp8Buffers out) {
  std::vector<float> values(weight.rows * weight.cols);
  decode_to_f32(weight.dtype, weight.bytes, values);
  const std::uint64_t tile_columns = scale_cols(weight.cols);
  for (std::uint64_t tile_row = 0; tile_row < scale_rows(weight.rows); ++tile_row) {
    for (std::uint64_t tile_column = 0; tile_column < tile_columns; ++tile_column) {
      const std::uint64_t row_end = std::min(weight.rows, (tile_row + 1) * kTileRows);
      const std::uint64_t column_end = std::min(weight.cols, (tile_column + 1) * kTileCols);
      float amax = 0.0f;
      for (std::uint64_t r = tile_row * kTileRows; r < row_end; ++r)
        for (std::uint64_t c = tile_column * kTileCols; c < column_end; ++c)
          amax = std::max(amax, finite_magnitude(values[r * weight.cols + c]));
      const float scale = scale_for_amax(amax);
      out.scales[tile_row * tile_columns + tile_column] = scale;
      for (std::uint64_t r = tile_row * kTileRows; r < row_end; ++r)
        for (std::uint64_t c = tile_column * kTileCols; c < column_end; ++c)
          out.codes[r * weight.cols + c] = encode(values[r * weight.cols + c], scale);
    }
  }
}

}  // namespace qs::fp8::detail
