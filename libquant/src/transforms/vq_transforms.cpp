#include "vq_transforms.h"

#include <fmt/format.h>

#include <chrono>
#include <cstring>

#include "hessian_cache.h"
#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/blended_statistics.h"
#include "qs/quant/vq.h"
#include "qs/quant/vq_gain_correction.h"
#include "qs/quant/vq_preparation.h"
#include "weight_guard.h"

namespace qs {

namespace {

class VqTransform final : public Transform {
 public:
  VqTransform(const QuantizeRequest& request, NanPolicy nan_policy, vq::Backend backend,
              std::shared_ptr<HessianCache> cache, QuantizeStageTimes* stage_times)
      : tier_(*request.vq_tier),
        codebook_(request.vq_codebook),
        options_(request.vq),
        integer_(request.integer),
        encode_(vq::encode_settings(request.vq)),
        nan_policy_(nan_policy),
        backend_(backend),
        blended_(request.calibration && request.integer.blend_tokens > 0
                     ? std::make_unique<BlendedStatistics>(*request.calibration,
                                                           request.integer.blend_tokens)
                     : nullptr),
        calibration_(blended_ ? blended_.get() : request.calibration),
        cache_(std::move(cache)),
        stage_times_(stage_times) {
    settings_.damp = integer_.damp;
    settings_.act_order = integer_.act_order;
    settings_.min_tokens = integer_.min_tokens;
    settings_.order_block = tier_.d;  // act order moves whole vectors
  }

  // As GPTQ's: the sweep applies the inverse Hessian to every row (rows·cols² multiply-adds),
  // plus the codeword search (rows·cols/d·K·d).
  std::uint64_t extra_cost(const PlanItem& item) const override {
    constexpr std::uint64_t kMultiplyAddsPerByte = 64;
    std::uint64_t cost = 0;
    for (const auto& source : item.sources) {
      const auto& shape = source.info->shape;
      if (shape.size() != 2) continue;
      const auto rows = static_cast<std::uint64_t>(shape[0]);
      const auto cols = static_cast<std::uint64_t>(shape[1]);
      cost += rows * cols * (cols + tier_.k) / kMultiplyAddsPerByte;
    }
    return cost;
  }

  std::string describe() const override {
    return fmt::format(
        "vq({}, d {}, K {}, {}{}{}{}{})", tier_.name, tier_.d, tier_.k,
        compensates() ? fmt::format("gptq damp {}", integer_.damp) : "no compensation",
        compensates() ? fmt::format(", {}, {}", vq_metric_name(options_.metric),
                                    vq_update_name(options_.update))
                      : "",
        options_.refit_scales ? ", least-squares scales" : "",
        integer_.blend_tokens > 0 ? fmt::format(", blend {} tokens", integer_.blend_tokens) : "",
        gain_corrected() ? ", output gain corrected" : "");
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    if (outputs.size() != 2 * sources.size())
      throw Error(ErrorClass::Internal, "vq.outputs", "wrong number of output tensors");
    std::vector<TensorQuality> quality(sources.size());
    if (!calibration_) {
      std::vector<std::size_t> all(sources.size());
      for (std::size_t m = 0; m < all.size(); ++m) all[m] = m;
      solve({}, all, sources, outputs, quality);
      return quality;
    }
    for (const auto& [key, members] : members_by_statistics(*calibration_, sources))
      solve(key, members, sources, outputs, quality);
    return quality;
  }

 private:
  bool compensates() const { return options_.compensation == VqCompensation::Gptq; }
  bool gain_corrected() const {
    return options_.gain_correction && calibration_ && tier_.kind == VqCodebookKind::Learned;
  }

  // Members calibrated on one matrix (gate and up of an expert) are stacked into one encode:
  // one prepared Hessian, rows independent, so each member's codes are those of its own encode.
  void solve(const std::string& key, const std::vector<std::size_t>& members,
             std::span<const SourceTensor> sources, std::span<const std::span<std::byte>> outputs,
             std::vector<TensorQuality>& quality) const {
    const TensorInfo& first = *sources[members[0]].info;
    const std::uint64_t cols = first.shape[1];
    const auto [stacked, row_offsets, rows] = stack_member_weights(members, sources, nan_policy_);

    // The Hessian drives compensation and scores the layer objective; without statistics (no
    // calibration, or an expert no token reached) the codes are the nearest codewords.
    std::shared_ptr<const gptq::PreparedHessian> hessian;
    if (calibration_ && (compensates() || !key.empty()))
      hessian =
          prepared_hessian(*cache_, *calibration_, key,
                           fmt::format("{}|vq d{}|damp {}|act order {}|min {}", key, tier_.d,
                                       settings_.damp, settings_.act_order, settings_.min_tokens),
                           cols, settings_, backend_, stage_times_);
    std::string fallback;
    auto settings = encode_;
    if (hessian && !hessian->fallback.empty()) {
      fallback = hessian->fallback;
      hessian.reset();
    }
    if (!hessian) settings.compensate = false;
    const bool blended = !key.empty() && blended_ && blended_->blend_of(key).has_value();

    vq::VqQuantized encoded;
    const auto sweep_start = std::chrono::steady_clock::now();
    const auto result = vq::encode(stacked, rows, cols, first.dtype, *codebook_, hessian.get(),
                                   settings, backend_, encoded);
    if (stage_times_) QuantizeStageTimes::add_since(stage_times_->sweep_ns, sweep_start);

    const std::uint64_t groups = cols / vq::kScaleGroup;
    const std::uint64_t vectors = cols / tier_.d;
    for (std::size_t i = 0; i < members.size(); ++i) {
      const std::size_t m = members[i];
      const TensorInfo& info = *sources[m].info;
      const std::uint64_t member_rows = info.shape[0];
      const std::uint64_t offset = row_offsets[i];
      auto& codes_out = outputs[2 * m];
      auto& scales_out = outputs[2 * m + 1];
      const std::uint64_t words = tier_.packed_words_per_row(cols);
      if (codes_out.size() != member_rows * words * sizeof(std::int32_t) ||
          scales_out.size() != member_rows * groups * dtype_bits(info.dtype) / 8)
        throw Error(ErrorClass::Internal, "vq.outputs",
                    "output tensor sizes disagree with the tier", "", info.name);
      // The member's own rows: codes, scales and source weights.
      vq::VqQuantized member;
      member.rows = member_rows;
      member.cols = cols;
      member.scale_dtype = encoded.scale_dtype;
      member.codes.assign(encoded.codes.begin() + offset * vectors,
                          encoded.codes.begin() + (offset + member_rows) * vectors);
      member.scales.assign(encoded.scales.begin() + offset * groups,
                           encoded.scales.begin() + (offset + member_rows) * groups);
      const std::span<const float> weight =
          std::span<const float>(stacked).subspan(offset * cols, member_rows * cols);
      TensorQuality& q = quality[m];
      q.tensor = info.name;
      q.elements = info.element_count();
      if (hessian) {
        // Low-bit codes shrink the module's output (its gain tr(Ŵ·H·Wᵀ) / tr(W·H·Wᵀ) is below
        // 1, about 0.75 at 1 bit); the bias adds up over experts and layers. Scaling the
        // member's group scales by 1 / gain removes it and lowers the objective too
        // (docs/performance/vq-quality.md, "Investigation: output shrinkage and the group scale").
        // Learned (vector) tiers only: the scalar tiers are the plain sign/level × group-scale
        // baselines, and a corrected 1-bit scalar keeps so little of the weight (0.3 dB SNR on
        // the bundled model) that the job's signal floor would refuse it.
        if (gain_corrected()) vq::correct_output_gain(weight, *codebook_, *hessian, member);
        std::vector<float> decoded(member_rows * cols);
        vq::decode(member, *codebook_, decoded);
        const auto objective =
            gptq::detail::objective_of_decoded(weight, decoded, member_rows, cols, *hessian);
        q.relative_loss = objective.reference > 0.0 ? objective.error / objective.reference : 0.0;
        for (std::uint64_t i = 0; i < decoded.size(); ++i) {
          const double difference = static_cast<double>(weight[i]) - decoded[i];
          q.signal_energy += static_cast<double>(weight[i]) * weight[i];
          q.error_energy += difference * difference;
        }
      } else {
        // The weight error is the stacked problem's, shared out by rows.
        const double share = static_cast<double>(member_rows) / static_cast<double>(rows);
        q.signal_energy = result.energy.signal * share;
        q.error_energy = result.energy.error * share;
      }
      std::vector<std::int32_t> packed(member_rows * words);
      vq::pack_codes(member.codes, member_rows, cols, tier_, packed);
      std::memcpy(codes_out.data(), packed.data(), codes_out.size());
      encode_from_f32(info.dtype, member.scales, scales_out);
      q.fallback = fallback;
      q.blended = blended && fallback.empty();
    }
  }

  VqTier tier_;
  const VqCodebook* codebook_;
  VqOptions options_;
  IntegerOptions integer_;
  vq::EncodeSettings encode_;
  NanPolicy nan_policy_;
  vq::Backend backend_;
  // Few-token experts filled up with the layer's pooled statistics (null: blend_tokens 0).
  std::unique_ptr<BlendedStatistics> blended_;
  const CalibrationStatistics* calibration_;
  std::shared_ptr<HessianCache> cache_;
  QuantizeStageTimes* stage_times_;
  gptq::Settings settings_;
};

}  // namespace

std::shared_ptr<const Transform> make_vq_transform(const QuantizeRequest& request,
                                                   QuantizerSettings& settings) {
  if (!request.vq_tier || !request.vq_codebook)
    throw Error(ErrorClass::Internal, "vq.request", "a vq transform without its tier or codebook");
  if (!settings.hessians) settings.hessians = std::make_shared<HessianCache>(settings.workers);
  return std::make_shared<VqTransform>(request, settings.nan_policy, backend_for(settings.device),
                                       settings.hessians, settings.stage_times);
}

}  // namespace qs
