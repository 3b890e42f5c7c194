// Dispatch, shape checks, decoding and the error figures every backend shares.

#include "qs/quant/fp8_block_quantizer.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <array>
#include <vector>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/core/codecs.h"

namespace qs::fp8 {
namespace {

std::uint64_t element_bytes(DType dtype) {
  if (dtype == DType::BF16 || dtype == DType::F16) return 2;
  if (dtype == DType::F32) return 4;
  throw_bad_input("fp8.dtype", fmt::format("FP8 block quantization takes BF16, F16 or F32 "
                                           "weights, not {}",
                                           dtype_name(dtype)));
}

// e4m3_to_f32 of every code, built from the codec once: decoding is then a load and a
// multiply per element, which the compiler vectorises.
const std::array<float, 256>& e4m3_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> values{};
    for (int code = 0; code < 256; ++code)
      values[code] = e4m3_to_f32(static_cast<std::uint8_t>(code));
    return values;
  }();
  return table;
}

// Decodes rows [first, last) with `store(index, value)`; Reference through the codec
// element by element, Cpu through the table (equal for every code: tests check).
template <typename Store>
void decode_rows(const Fp8View& stored, std::uint64_t first, std::uint64_t last, Backend backend,
                 Store store) {
  const auto& table = e4m3_values();
  const std::uint64_t scale_columns = scale_cols(stored.cols);
  for (std::uint64_t r = first; r < last; ++r) {
    const float* scale_row = stored.scales.data() + (r / kTileRows) * scale_columns;
    const std::uint8_t* codes = stored.codes.data() + r * stored.cols;
    const std::uint64_t base = r * stored.cols;
    for (std::uint64_t tile = 0; tile < scale_columns; ++tile) {
      const float scale = scale_row[tile];
      const std::uint64_t begin = tile * kTileCols;
      const std::uint64_t end = begin + kTileCols < stored.cols ? begin + kTileCols : stored.cols;
      if (backend == Backend::Reference) {
        for (std::uint64_t c = begin; c < end; ++c) store(base + c, decode(codes[c], scale));
      } else {
        for (std::uint64_t c = begin; c < end; ++c) store(base + c, table[codes[c]] * scale);
      }
    }
  }
}

template <typename Store>
void decode_matrix(const Fp8View& stored, Backend backend, Store store) {
  if (backend == Backend::Reference) {
    decode_rows(stored, 0, stored.rows, backend, store);
    return;
  }
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, stored.rows, 16),
                    [&](const tbb::blocked_range<std::uint64_t>& rows) {
                      decode_rows(stored, rows.begin(), rows.end(), backend, store);
                    });
}

bool is_finite(float value) { return (f32_to_bits(value) & 0x7F800000u) != 0x7F800000u; }

}  // namespace

std::uint64_t scale_rows(std::uint64_t rows) { return tile_count(rows, kTileRows); }
std::uint64_t scale_cols(std::uint64_t cols) { return tile_count(cols, kTileCols); }

namespace detail {

void check_shapes(const WeightView& weight, const Fp8Buffers& out) {
  if (weight.bytes.size() != weight.rows * weight.cols * element_bytes(weight.dtype))
    throw Error(ErrorClass::Internal, "fp8.shape", "weight bytes do not match its shape");
  if (out.codes.size() != weight.rows * weight.cols ||
      out.scales.size() != scale_rows(weight.rows) * scale_cols(weight.cols))
    throw Error(ErrorClass::Internal, "fp8.shape", "output buffers do not match the weight");
}

void check_shapes(const Fp8View& stored, std::size_t out_elements) {
  if (stored.codes.size() != stored.rows * stored.cols ||
      stored.scales.size() != scale_rows(stored.rows) * scale_cols(stored.cols) ||
      out_elements != stored.rows * stored.cols)
    throw Error(ErrorClass::Internal, "fp8.shape", "FP8 buffers do not match the shape");
}

}  // namespace detail

void quantize(const WeightView& weight, Fp8Buffers out, Backend backend) {
  detail::check_shapes(weight, out);
  switch (backend) {
    case Backend::Reference:
      return detail::quantize_reference(weight, out);
    case Backend::Cpu:
      return detail::quantize_cpu(weight, out);
    case Backend::Cuda:
      return detail::quantize_cuda(weight, out);
  }
}

void dequantize(const Fp8View& stored, std::span<float> out, Backend backend) {
  detail::check_shapes(stored, out.size());
  decode_matrix(stored, backend, [&](std::uint64_t i, float value) { out[i] = value; });
}

void dequantize_to_bf16(const Fp8View& stored, std::span<std::uint16_t> out, Backend backend) {
  detail::check_shapes(stored, out.size());
  decode_matrix(stored, backend,
                [&](std::uint64_t i, float value) { out[i] = f32_to_bf16(value); });
}

ErrorEnergy error_energy(const WeightView& weight, const Fp8View& stored) {
  detail::check_shapes(stored, weight.rows * weight.cols);
  std::vector<ErrorEnergy> per_row(weight.rows);
  tbb::parallel_for(
      tbb::blocked_range<std::uint64_t>(0, weight.rows),
      [&](const tbb::blocked_range<std::uint64_t>& rows) {
        std::vector<float> original(weight.cols);
        std::vector<float> decoded(weight.cols);
        for (std::uint64_t r = rows.begin(); r < rows.end(); ++r) {
          fp4::detail::decode_row(weight, r, original.data());
          decode_rows(stored, r, r + 1, Backend::Cpu,
                      [&](std::uint64_t i, float value) { decoded[i - r * weight.cols] = value; });
          ErrorEnergy row;
          for (std::uint64_t c = 0; c < weight.cols; ++c) {
            // Non-finite weights are refused or zeroed before; skip them here.
            if (!is_finite(original[c])) continue;
            const double value = original[c];
            const double difference = value - static_cast<double>(decoded[c]);
            row.signal += value * value;
            row.error += difference * difference;
          }
          per_row[r] = row;
        }
      });
  return sum_in_row_order(per_row);
}

}  // namespace qs::fp8
