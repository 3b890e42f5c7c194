// GPTQ-VQ encode (qs/quant/vq.h; docs/algorithms/vq.md, "GPTQ with a vector quantizer"): the
// driver around the sweeps of vq_sweep.h. It checks the input, zeroes dead columns, builds the
// per-vector metric tables the codeword search reads, runs the chosen backend, refits scales
// when asked, and scores the result with the layer objective.

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "cpu/vq_search_lanes.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq.h"
#include "vq_scale_refit.h"
#include "vq_sweep.h"

namespace qs::vq {
namespace {

void check_shapes(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                  const Codebook& codebook, const gptq::PreparedHessian* hessian,
                  std::span<float> swept) {
  const Tier& tier = codebook.tier;
  if (const auto problem = vq_tier_problem(tier, cols); !problem.empty())
    throw_bad_input("vq.shape", problem);
  if (tier.d > core::kMaxDimension)
    throw_bad_input("vq.shape", fmt::format("tier {}: vectors of {} values are longer than the "
                                            "encoder's limit of {}",
                                            tier.name, tier.d, core::kMaxDimension));
  if (codebook.codewords.size() != static_cast<std::uint64_t>(tier.k) * tier.d)
    throw_bad_input("vq.codebook",
                    fmt::format("codebook of tier {} holds {} values, not K·d = {}·{}", tier.name,
                                codebook.codewords.size(), tier.k, tier.d));
  if (weight.size() != rows * cols || (!swept.empty() && swept.size() != rows * cols))
    throw Error(ErrorClass::Internal, "vq.shape", "weight and outputs do not match rows × cols");
  if (hessian && hessian->columns != cols)
    throw Error(ErrorClass::Internal, "vq.shape", "the Hessian does not match the input columns");
}

void check_finite(std::span<const float> weight, std::uint64_t cols) {
  for (std::uint64_t i = 0; i < weight.size(); ++i)
    if (!intq::is_finite_value(weight[i]))
      throw_bad_input("vq.non_finite",
                      fmt::format("weight at row {}, column {} is {}; VQ needs finite weights",
                                  i / cols, i % cols, weight[i]));
}

// A group whose RMS overflows the scale dtype (F16 above 65504) cannot be stored: refused
// rather than written as Inf, which would decode to Inf and NaN.
void check_scales(const VqQuantized& quantized) {
  const std::uint64_t groups = quantized.cols / kScaleGroup;
  for (std::uint64_t i = 0; i < quantized.scales.size(); ++i)
    if (!intq::is_finite_value(quantized.scales[i]))
      throw_bad_input("vq.scale_range",
                      fmt::format("the scale of row {}, columns {}..{} overflows {}", i / groups,
                                  i % groups * kScaleGroup, (i % groups + 1) * kScaleGroup - 1,
                                  dtype_name(quantized.scale_dtype)));
}

// The sweep fixes a group's scale and a vector's code once, so the processing order must move
// whole d-column vectors, their columns in place (gptq::Settings::order_block = d).
void check_vector_order(const std::vector<std::uint32_t>& order, std::uint32_t d) {
  for (std::uint64_t j = 0; j < order.size(); ++j)
    if (order[j] % d != j % d || order[j] / d != order[j - j % d] / d)
      throw Error(ErrorClass::Internal, "vq.order",
                  fmt::format("VQ needs a Hessian ordered by whole {}-column vectors "
                              "(prepare it with order_block = {})",
                              d, d));
}

// For each processing vector position v, M_v = U_PP⁻¹·U_PP⁻ᵀ of its d×d block of U (inverted in
// f64, stored in f32) and every codeword's cᵀM_v c by the search core's arithmetic, into a
// table of `padded` entries per position (+∞ after K).
void mahalanobis_tables(const std::vector<float>& u, std::uint64_t cols,
                        const std::vector<float>& codewords, std::uint32_t d, std::uint32_t k,
                        std::uint32_t padded, std::vector<float>& metrics,
                        std::vector<float>& terms) {
  const std::uint64_t vectors = cols / d;
  metrics.assign(vectors * d * d, 0.0f);
  terms.assign(vectors * padded, std::numeric_limits<float>::infinity());
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, vectors, 8), [&](const auto& range) {
    std::vector<double> inverse(d * d);
    for (std::uint64_t v = range.begin(); v != range.end(); ++v) {
      const std::uint64_t base = v * d;
      auto block = [&](std::uint32_t a, std::uint32_t b) {
        return static_cast<double>(u[(base + a) * cols + base + b]);
      };
      // Upper-triangular inverse, column by column: B[a, b] = (δ_ab − Σ_{a<m≤b} U_am B_mb) / U_aa.
      std::fill(inverse.begin(), inverse.end(), 0.0);
      for (std::uint32_t b = 0; b < d; ++b)
        for (std::uint32_t a = b + 1; a-- > 0;) {
          double sum = a == b ? 1.0 : 0.0;
          for (std::uint32_t m = a + 1; m <= b; ++m) sum -= block(a, m) * inverse[m * d + b];
          inverse[a * d + b] = sum / block(a, a);
        }
      float* metric = metrics.data() + v * d * d;
      for (std::uint32_t a = 0; a < d; ++a)
        for (std::uint32_t b = 0; b < d; ++b) {
          double sum = 0.0;
          for (std::uint32_t m = std::max(a, b); m < d; ++m)
            sum += inverse[a * d + m] * inverse[b * d + m];
          metric[a * d + b] = static_cast<float>(sum);
        }
      for (std::uint32_t c = 0; c < k; ++c)
        terms[v * padded + c] =
            core::codeword_term(codewords.data() + std::uint64_t{c} * d, metric, d);
    }
  });
}

}  // namespace

EncodeResult encode(std::span<const float> weight, std::uint64_t rows, std::uint64_t cols,
                    DType scale_dtype, const Codebook& codebook,
                    const gptq::PreparedHessian* hessian, const EncodeSettings& settings,
                    Backend backend, VqQuantized& out, std::span<float> swept) {
  check_shapes(weight, rows, cols, codebook, hessian, swept);
  check_finite(weight, cols);
  const std::uint32_t d = codebook.tier.d, k = codebook.tier.k;
  const std::uint64_t vectors = cols / d, groups = cols / kScaleGroup;
  // Codewords are used as stored: rounding again is a no-op for a proper codebook and makes
  // any other one behave as the checkpoint will.
  Codebook rounded = codebook;
  for (auto& value : rounded.codewords) value = intq::round_to_dtype(value, codebook.dtype);
  const std::vector<float>& codewords = rounded.codewords;

  // Dead columns (inputs that are always 0) do not matter: zeroed, as GPTQ does.
  std::vector<float> live(weight.begin(), weight.end());
  if (hessian)
    for (std::uint64_t c = 0; c < cols; ++c)
      if (hessian->dead[c])
        for (std::uint64_t r = 0; r < rows; ++r) live[r * cols + c] = 0.0f;

  const bool compensate = settings.compensate && hessian && hessian->fallback.empty();
  std::vector<std::uint32_t> order(cols), position(cols);
  if (compensate) {
    check_vector_order(hessian->order, d);
    order = hessian->order;
  } else {
    std::iota(order.begin(), order.end(), 0u);
  }
  for (std::uint64_t j = 0; j < cols; ++j) position[order[j]] = static_cast<std::uint32_t>(j);

  detail::SweepPlan plan;
  plan.rows = rows;
  plan.cols = cols;
  plan.d = d;
  plan.k = k;
  plan.scale_dtype = scale_dtype;
  plan.codewords = codewords.data();
  plan.order = order.data();
  plan.position = position.data();
  plan.u = compensate ? hessian->u.data() : nullptr;
  plan.update = settings.update;
  // Term tables padded to whole lane groups of the CPU search (+∞ never wins).
  const std::uint32_t padded = (k + cpu::kLanes - 1) / cpu::kLanes * cpu::kLanes;
  plan.terms_padded = padded;
  std::vector<float> metrics, terms;
  if (compensate && settings.metric == Metric::Mahalanobis) {
    mahalanobis_tables(hessian->u, cols, codewords, d, k, padded, metrics, terms);
    plan.metrics = metrics.data();
    plan.terms_stride = padded;
  } else {
    terms.assign(padded, std::numeric_limits<float>::infinity());
    for (std::uint32_t c = 0; c < k; ++c)
      terms[c] = core::codeword_term(codewords.data() + std::uint64_t{c} * d, nullptr, d);
  }
  plan.terms = terms.data();

  out.rows = rows;
  out.cols = cols;
  out.scale_dtype = scale_dtype;
  out.codes.assign(rows * vectors, 0u);
  out.scales.assign(rows * groups, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> w(rows * cols);
  tbb::parallel_for(tbb::blocked_range<std::uint64_t>(0, rows, 16), [&](const auto& range) {
    for (std::uint64_t r = range.begin(); r != range.end(); ++r)
      for (std::uint64_t j = 0; j < cols; ++j) w[r * cols + j] = live[r * cols + order[j]];
  });
  std::vector<float> swept_processing(swept.empty() ? 0 : rows * cols);
  std::vector<double> row_objective(compensate ? rows : 0, 0.0);
  const detail::SweepOutputs outputs{out.codes, out.scales, swept_processing, row_objective};
  if (backend == Backend::Reference)
    detail::sweep_vq_reference(w, plan, outputs);
  else if (backend == Backend::Cuda)
    detail::sweep_vq_cuda(w, plan, outputs);
  else
    detail::sweep_vq_cpu(w, plan, outputs);
  if (!swept.empty())
    for (std::uint64_t r = 0; r < rows; ++r)
      for (std::uint64_t j = 0; j < cols; ++j)
        swept[r * cols + order[j]] = swept_processing[r * cols + j];
  if (settings.scale_rule == ScaleRule::LeastSquares)
    detail::refit_scales(live, codewords, d, hessian, out);
  check_scales(out);

  std::vector<float> decoded(rows * cols);
  decode(out, rounded, decoded);
  EncodeResult result;
  for (std::uint64_t i = 0; i < decoded.size(); ++i) {
    const double difference = static_cast<double>(weight[i]) - decoded[i];
    result.energy.signal += static_cast<double>(weight[i]) * weight[i];
    result.energy.error += difference * difference;
  }
  if (!hessian) return result;
  // The exact update's errors are the objective's own terms (ΔW = E·U, gptq.h swept_objective),
  // so that case needs only tr(W·H·Wᵀ); any other case scores the decoded matrix.
  const bool cuda = backend == Backend::Cuda;
  std::vector<std::span<const float>> forms{weight};
  const bool from_sweep =
      compensate && settings.update == ErrorUpdate::Exact && settings.scale_rule == ScaleRule::Rms;
  std::vector<float> difference;
  if (!from_sweep) {
    difference.resize(rows * cols);
    for (std::uint64_t i = 0; i < difference.size(); ++i) difference[i] = weight[i] - decoded[i];
    forms.push_back(difference);
  }
  const auto values = gptq::detail::quadratic_forms(forms, rows, cols, *hessian, cuda);
  const double error =
      from_sweep ? gptq::detail::swept_objective(row_objective, live, decoded, cols, *hessian)
                 : values[1];
  result.relative_loss = values[0] > 0.0 ? error / values[0] : 0.0;
  return result;
}

}  // namespace qs::vq
