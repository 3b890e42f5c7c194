#pragma once
// FP8 block-scaled quantization of whole matrices, and its decoding (fp8_block.h holds the
// per-element math and the conventions). Three backends write identical bytes: Reference
// (scalar loops, the truth), Cpu (oneTBB over bands of 128 rows) and Cuda (one thread block
// per 128 × 128 tile); decoding has a Reference and a Cpu form.

#include <cstdint>
#include <span>

#include "qs/ckpt/core/dtype.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/fp8_block.h"

namespace qs::fp8 {

// The source matrix as stored (BF16, F16 or F32, row-major [rows, cols]); any shape.
using WeightView = fp4::WeightView;
using Backend = fp4::Backend;
using ErrorEnergy = fp4::ErrorEnergy;

// Where the codes go: E4M3 codes [rows, cols] and F32 scales [⌈rows/128⌉, ⌈cols/128⌉].
struct Fp8Buffers {
  std::span<std::uint8_t> codes;
  std::span<float> scales;
};

// The stored form being decoded: codes [rows, cols], scales [⌈rows/128⌉, ⌈cols/128⌉].
struct Fp8View {
  std::span<const std::uint8_t> codes;
  std::span<const float> scales;
  std::uint64_t rows = 0;
  std::uint64_t cols = 0;
};

std::uint64_t scale_rows(std::uint64_t rows);
std::uint64_t scale_cols(std::uint64_t cols);

// Throws BadInput "fp8.dtype" for a source that is not BF16/F16/F32, Internal "fp8.shape"
// for buffers that do not match the shape.
void quantize(const WeightView& weight, Fp8Buffers out, Backend backend);

// w = e4m3(code) · scale into `out` [rows, cols] (f32), or rounded to BF16 codes.
void dequantize(const Fp8View& stored, std::span<float> out, Backend backend = Backend::Cpu);
void dequantize_to_bf16(const Fp8View& stored, std::span<std::uint16_t> out,
                        Backend backend = Backend::Cpu);

// Σ w² and Σ (w − decoded)² over the finite elements, rows summed in order (the same figures
// whatever the backend that made the codes).
ErrorEnergy error_energy(const WeightView& weight, const Fp8View& stored);

namespace detail {
void check_shapes(const WeightView& weight, const Fp8Buffers& out);
void check_shapes(const Fp8View& stored, std::size_t out_elements);
void quantize_reference(const WeightView& weight, Fp8Buffers out);
void quantize_cpu(const WeightView& weight, Fp8Buffers out);
void quantize_cuda(const WeightView& weight, Fp8Buffers out);
}  // namespace detail

}  // namespace qs::fp8
