// The CPU backend: oneTBB over bands of 128 rows (one row of tiles each). A band is decoded
// into an f32 buffer once, its tiles' amaxes taken row by row (max is exact in any order, so
// they equal the reference's), then every element encoded in a flat loop.

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <vector>

#include "qs/quant/fp8_block_quantizer.h"

namespace qs::fp8::detail {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define QS_FP8_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QS_FP8_VECTOR_CLONES
#endif

QS_FP8_VECTOR_CLONES void row_tile_maxima(const float* values, std::uint64_t cols, float* maxima) {
  for (std::uint64_t begin = 0, tile = 0; begin < cols; begin += kTileCols, ++tile) {
    const std::uint64_t end = std::min(cols, begin + kTileCols);
    float amax = maxima[tile];
    for (std::uint64_t c = begin; c < end; ++c) {
      const float magnitude = finite_magnitude(values[c]);
      amax = magnitude > amax ? magnitude : amax;
    }
    maxima[tile] = amax;
  }
}

QS_FP8_VECTOR_CLONES void encode_row(const float* values, std::uint64_t cols, const float* scales,
                                     std::uint8_t* codes) {
  for (std::uint64_t begin = 0, tile = 0; begin < cols; begin += kTileCols, ++tile) {
    const std::uint64_t end = std::min(cols, begin + kTileCols);
    const float scale = scales[tile];
    for (std::uint64_t c = begin; c < end; ++c) codes[c] = encode(values[c], scale);
  }
}

void quantize_band(const WeightView& weight, std::uint64_t band, Fp8Buffers out,
                   std::vector<float>& values) {
  const std::uint64_t first = band * kTileRows;
  const std::uint64_t last = std::min(weight.rows, first + kTileRows);
  const std::uint64_t tile_columns = scale_cols(weight.cols);
  values.resize((last - first) * weight.cols);
  float* scales = out.scales.data() + band * tile_columns;
  std::fill(scales, scales + tile_columns, 0.0f);  // the maxima first, then the scales
  for (std::uint64_t r = first; r < last; ++r) {
    float* row = values.data() + (r - first) * weight.cols;
    fp4::detail::decode_row(weight, r, row);
    row_tile_maxima(row, weight.cols, scales);
  }
  for (std::uint64_t t = 0; t < tile_columns; ++t) scales[t] = scale_for_amax(scales[t]);
  for (std::uint64_t r = first; r < last; ++r)
    encode_row(values.data() + (r - first) * weight.cols, weight.cols, scales,
               out.codes.data() + r * weight.cols);
}

}  // namespace

void quantize_cpu(const WeightView& weight, Fp8Buffers out) {
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, scale_rows(weight.rows)),
                    [&](const tbb::blocked_range<std::uint64_t>& bands) {
                      std::vector<float> values;
                      for (std::uint64_t band = bands.begin(); band < bands.end(); ++band)
                        quantize_band(weight, band, out, values);
                    });
}

}  // namespace qs::fp8::detail
