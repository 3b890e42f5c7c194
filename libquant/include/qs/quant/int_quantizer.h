#pragma once
// Round-to-nearest integer quantization of whole matrices (int_group.h holds the per-group
// math) and the compressed-tensors `pack-quantized` layout (docs/formats/compressed-tensors.md,
// "pack-quantized").
//
// Three backends give identical codes, scales, zero points and error sums: Reference (scalar
// loops, the truth), Cpu (oneTBB over rows) and Cuda (one thread per group). Per-group squared
// errors are f32 sums in element order; rows add them in group order in f64.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "qs/ckpt/core/dtype.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/int_group.h"

namespace qs::intq {

using fp4::Backend;
using fp4::ErrorEnergy;
using fp4::WeightView;

// One integer weight scheme: bits, symmetric or not, group size along the input dimension
// (kChannel: one group per row) and the observer choosing each group's range.
inline constexpr std::int64_t kChannel = -1;
struct IntScheme {
  IntFormat format;
  std::int64_t group_size = 128;
  Observer observer = Observer::MinMax;

  std::uint64_t group_width(std::uint64_t cols) const {
    return group_size == kChannel ? cols : static_cast<std::uint64_t>(group_size);
  }
  std::uint64_t groups(std::uint64_t cols) const { return cols / group_width(cols); }
};

std::optional<Observer> parse_observer(std::string_view text);
const char* observer_name(Observer observer);

// A quantized matrix before packing: codes [rows, cols], per (row, group) scales (values of
// `scale_dtype`) and zero points, row-major [rows, groups].
struct IntQuantized {
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
  DType scale_dtype = DType::BF16;
  std::vector<std::int8_t> codes;
  std::vector<float> scales;
  std::vector<std::int8_t> zeros;

  IntQuantized() = default;
  IntQuantized(std::uint64_t rows, std::uint64_t cols, std::uint64_t groups, DType scale_dtype)
      : rows(rows),
        cols(cols),
        scale_dtype(scale_dtype),
        codes(rows * cols),
        scales(rows * groups),
        zeros(rows * groups) {}
  std::uint64_t groups() const { return rows == 0 ? 0 : scales.size() / rows; }
  GroupParams params(std::uint64_t row, std::uint64_t group) const {
    return {scales[row * groups() + group], zeros[row * groups() + group]};
  }
};

// Throws BadInput "int.group_size" when cols is not a multiple of the group size, "int.dtype"
// for a non-float weight, "int.bits" for bits outside 2..8. The scale dtype is the weight's.
ErrorEnergy quantize(const WeightView& weight, const IntScheme& scheme, IntQuantized& out,
                     Backend backend);

// ŵ = (q - zp) · s in the scale dtype, into `out` [rows, cols].
void dequantize(const IntQuantized& quantized, std::span<float> out);

// ---- compressed-tensors pack-quantized ----
// Codes offset by 2^(b-1) (unsigned), a dense little-endian bit stream per row in int32 words
// (element 0 in the low bits); zero points the same way along the output dimension.
struct PackedShapes {
  std::uint64_t words_per_row = 0;    // weight_packed [rows, words_per_row]
  std::uint64_t zero_point_rows = 0;  // weight_zero_point [zero_point_rows, groups]
};
PackedShapes packed_shapes(std::uint64_t rows, std::uint64_t cols, int bits);

// Writes weight_packed (I32), weight_scale (scale dtype bytes) and, when `zero_points` is not
// empty, weight_zero_point (I32). Output spans must have the sizes of packed_shapes.
void pack(const IntQuantized& quantized, int bits, std::span<std::byte> weight_packed,
          std::span<std::byte> weight_scale, std::span<std::byte> zero_points);

// The inverse of pack: codes, scales (decoded from `scale_dtype`) and zero points back.
// `zero_points` empty means symmetric (all zero points 0).
IntQuantized unpack(std::span<const std::byte> weight_packed, std::span<const std::byte> weight_scale,
                    DType scale_dtype, std::span<const std::byte> zero_points, std::uint64_t rows,
                    std::uint64_t cols, std::uint64_t groups, int bits);

namespace detail {
void check_shapes(const WeightView& weight, const IntScheme& scheme);
ErrorEnergy quantize_reference(const WeightView& weight, const IntScheme& scheme,
                               IntQuantized& out);
ErrorEnergy quantize_cpu(const WeightView& weight, const IntScheme& scheme, IntQuantized& out);
ErrorEnergy quantize_cuda(const WeightView& weight, const IntScheme& scheme, IntQuantized& out);
}  // namespace detail

}  // namespace qs::intq
