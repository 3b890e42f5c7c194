#include "qs/quant/vq_allocation_error.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "qs/ckpt/core/error.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/quant/vq_gain_correction.h"

namespace qs::vq {

std::vector<std::uint64_t> sample_rows(std::uint64_t rows, std::uint64_t count,
                                       std::uint64_t seed) {
  std::vector<std::uint64_t> all(rows);
  std::iota(all.begin(), all.end(), 0);
  if (count >= rows) return all;
  // Partial Fisher–Yates with mt19937_64 (its output is fixed by the standard) and a plain
  // modulo (std::uniform_int_distribution is not the same on every library); the bias of
  // 2^64 mod n is immaterial for a sample.
  std::mt19937_64 random(seed);
  for (std::uint64_t i = 0; i < count; ++i) std::swap(all[i], all[i + random() % (rows - i)]);
  all.resize(count);
  std::sort(all.begin(), all.end());
  return all;
}

double allocation_error(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                        DType scale_dtype, const Codebook& codebook,
                        std::span<const double> hessian, const AllocationErrorSettings& settings,
                        Backend backend, const gptq::PreparedHessian* prepared) {
  if (weight.size() != rows * cols)
    throw_bad_input("vq.shape", fmt::format("the weight holds {} values, not {} × {}",
                                            weight.size(), rows, cols));
  if (hessian.size() != cols * cols)
    throw_bad_input("vq.shape", fmt::format("the Hessian holds {} values, not {}² for {} inputs",
                                            hessian.size(), cols, cols));
  if (rows == 0 || cols == 0) return 0.0;
  const auto picked = sample_rows(rows, settings.sample_rows, settings.seed);
  const std::uint64_t count = picked.size();
  std::vector<float> sample(count * cols);
  for (std::uint64_t i = 0; i < count; ++i)
    std::copy_n(weight.begin() + static_cast<std::ptrdiff_t>(picked[i] * cols), cols,
                sample.begin() + static_cast<std::ptrdiff_t>(i * cols));

  // Each row is encoded on its own (nearest codeword, or GPTQ feedback along its columns), so
  // encoding the sample alone gives the sampled rows of the whole matrix's encode.
  if (prepared && !prepared->fallback.empty()) prepared = nullptr;  // the job encodes plainly
  auto encode_with = settings.encode;
  if (!prepared) encode_with.compensate = false;
  VqQuantized quantized;
  encode(sample, count, cols, scale_dtype, codebook, encode_with.compensate ? prepared : nullptr,
         encode_with, backend, quantized);
  if (settings.correct_gain && prepared) correct_output_gain(sample, codebook, *prepared, quantized);
  std::vector<float> decoded(count * cols);
  decode(quantized, codebook, decoded);

  std::vector<double> error(count * cols), product(count * cols);
  for (std::uint64_t i = 0; i < error.size(); ++i)
    error[i] = static_cast<double>(sample[i]) - static_cast<double>(decoded[i]);
  // ΔW·H in f64 with the fixed-tile BLAS (the same bytes at any thread count), then each row's
  // dot with its ΔW, summed in row order.
  blas::dgemm(blas::Op::None, blas::Op::None, count, cols, cols, 1.0, error.data(), cols,
              hessian.data(), cols, 0.0, product.data(), cols);
  double total = 0.0;
  for (std::uint64_t r = 0; r < count; ++r) {
    double row = 0.0;
    for (std::uint64_t c = 0; c < cols; ++c) row += error[r * cols + c] * product[r * cols + c];
    total += row;
  }
  return settings.frequency * total * static_cast<double>(rows) / static_cast<double>(count);
}

}  // namespace qs::vq
