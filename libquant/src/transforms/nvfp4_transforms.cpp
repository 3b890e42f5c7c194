#include "nvfp4_transforms.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "hessian_cache.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/quant/blended_statistics.h"
#include "qs/quant/fp4_quantizer.h"
#include "qs/quant/gptq_nvfp4.h"
#include "weight_guard.h"

namespace qs {
namespace {

// What both NVFP4 transforms share: the NaN check and the group's amax, the global scale's
// checks, and writing the per-member scalars in the layout's convention.
class Nvfp4TransformBase : public Transform {
 public:
  Nvfp4TransformBase(const QuantizeRequest& request, fp4::ScaleMethod method, NanPolicy nan_policy,
                     fp4::Backend backend, std::shared_ptr<HessianCache> cache)
      : format_(request.format),
        reciprocal_(weight_format_for(CodeFamily::Nvfp4, request.format).scale_convention ==
                    ScaleConvention::Reciprocal),
        method_(method),
        nan_policy_(nan_policy),
        backend_(backend),
        input_amax_(request.input_amax),
        blended_(request.calibration && request.integer.blend_tokens > 0
                     ? std::make_unique<BlendedStatistics>(*request.calibration,
                                                           request.integer.blend_tokens)
                     : nullptr),
        calibration_(blended_ ? blended_.get() : request.calibration),
        damp_(request.integer.damp),
        blend_tokens_(request.integer.blend_tokens),
        cache_(std::move(cache)) {}

 protected:
  std::size_t outputs_per_member() const { return input_amax_.empty() ? 3 : 4; }

  std::string activations() const {
    std::string text;
    for (float amax : input_amax_) text += fmt::format(", input amax {}", amax);
    return text;
  }

  struct Group {
    std::vector<std::vector<float>> zeroed;  // storage behind views with NaN/Inf set to 0
    std::vector<fp4::WeightView> views;
    float amax = 0.0f;
  };

  Group read_group(std::span<const SourceTensor> sources,
                   std::span<const std::span<std::byte>> outputs) const {
    if (outputs.size() != sources.size() * outputs_per_member())
      throw Error(ErrorClass::Internal, "nvfp4.outputs", "wrong number of output tensors");
    Group group;
    group.zeroed.resize(sources.size());
    for (std::size_t m = 0; m < sources.size(); ++m) {
      const TensorInfo& info = *sources[m].info;
      fp4::WeightView view{info.dtype, sources[m].bytes, info.shape[0], info.shape[1]};
      const auto scan = fp4::scan_amax(view);
      group.amax = std::max(group.amax, scan.amax);
      group.views.push_back(finite_view(view, info, scan.non_finite, nan_policy_, group.zeroed[m]));
    }
    return group;
  }

  // The hessian method's blocks for a member; nullptr without statistics for it.
  std::shared_ptr<const fp4::BlockHessians> block_hessians_of(const TensorInfo& info) const {
    if (method_ != fp4::ScaleMethod::Hessian) return nullptr;
    if (!calibration_)
      throw Error(ErrorClass::Internal, "nvfp4.no_calibration",
                  "the hessian scale method without statistics");
    const auto key = statistics_key(*calibration_, module_of(info));
    if (key.empty()) return nullptr;
    return cache_->blocks(fmt::format("{}#damp{}#blend{}", key, damp_, blend_tokens_), [&] {
      return fp4::block_hessians(calibration_->second_moments(key), info.shape[1], damp_);
    });
  }

  struct GlobalScale {
    std::vector<std::shared_ptr<const fp4::BlockHessians>> hessians;  // owners of the views
    std::vector<const fp4::BlockHessians*> hessian_views;  // per member; null without statistics
    float s2 = 1.0f;
    float stored = 1.0f;  // s2 in the layout's convention
  };

  // The group's s2 (searched with the members' block Hessians under the hessian method).
  GlobalScale global_scale(std::span<const SourceTensor> sources, const Group& group) const {
    GlobalScale scale;
    for (const auto& source : sources) {
      scale.hessians.push_back(block_hessians_of(*source.info));
      scale.hessian_views.push_back(scale.hessians.back().get());
    }
    scale.s2 =
        fp4::choose_global_scale(group.views, group.amax, method_, backend_, scale.hessian_views);
    scale.stored = stored_global(scale.s2, group.amax, sources[0].info->name);
    return scale;
  }

  // A weight whose largest magnitude is below ~8e-36 has s2 = amax/2688 so small that the
  // compressed-tensors divisor 1/s2 is Inf: never write a non-finite scale.
  float stored_global(float s2, float amax, const std::string& tensor) const {
    const float stored = reciprocal_ ? 1.0f / s2 : s2;
    if (!std::isfinite(stored) || !(s2 > 0.0f))
      throw_bad_input("nvfp4.scale_overflow",
                      fmt::format("its largest magnitude {} gives the global scale {} whose {} is "
                                  "not a finite fp32; keep it unquantized with a recipe rule",
                                  amax, s2, reciprocal_ ? "reciprocal" : "value"),
                      {}, tensor);
    return stored;
  }

  // Packed codes and block scales are the first two outputs of member m; the global scale and
  // (W4A4) the input scale follow.
  std::span<std::byte> output(std::span<const std::span<std::byte>> outputs, std::size_t member,
                              std::size_t index) const {
    return outputs[outputs_per_member() * member + index];
  }

  void write_scalars(std::span<const std::span<std::byte>> outputs, std::size_t member,
                     float stored) const {
    std::memcpy(output(outputs, member, 2).data(), &stored, sizeof(float));
    if (input_amax_.empty()) return;
    // The multiplier is amax/(6·448); the input scale follows the global's convention.
    const float amax = input_amax_[member];
    const float input_scale = reciprocal_ ? (fp4::kE2M1Max * fp4::kE4M3Max) / amax
                                          : amax / (fp4::kE2M1Max * fp4::kE4M3Max);
    std::memcpy(output(outputs, member, 3).data(), &input_scale, sizeof(float));
  }

  // Byte-equivalents of a partitioned job's share (plan.h, Transform::extra_cost): the
  // arithmetic per weight, at kMultiplyAddsPerByte multiply-adds per byte streamed, as GPTQ's.
  static std::uint64_t weighted_cost(const PlanItem& item, std::uint64_t per_weight,
                                     bool per_column) {
    constexpr std::uint64_t kMultiplyAddsPerByte = 64;
    std::uint64_t cost = 0;
    for (const auto& source : item.sources) {
      const auto& shape = source.info->shape;
      if (shape.size() != 2) continue;
      const auto weights = static_cast<std::uint64_t>(shape[0]) * shape[1];
      cost += weights * (per_column ? static_cast<std::uint64_t>(shape[1]) : per_weight) /
              kMultiplyAddsPerByte;
    }
    return cost;
  }

  static fp4::Fp4Buffers buffers(std::span<std::byte> packed, std::span<std::byte> scales) {
    return {{reinterpret_cast<std::uint8_t*>(packed.data()), packed.size()},
            {reinterpret_cast<std::uint8_t*>(scales.data()), scales.size()}};
  }

  OutputFormat format_;
  bool reciprocal_;  // the stored scales are divisors (compressed-tensors)
  fp4::ScaleMethod method_;
  NanPolicy nan_policy_;
  fp4::Backend backend_;
  std::vector<float> input_amax_;
  // Few-token experts filled up with the layer's pooled statistics, as integer GPTQ does
  // (blended_statistics.h; null: blend_tokens 0).
  std::unique_ptr<BlendedStatistics> blended_;
  const CalibrationStatistics* calibration_;
  double damp_;
  std::uint64_t blend_tokens_;
  std::shared_ptr<HessianCache> cache_;
};

// One fused group (or a lone Linear): the group's global scale, then each member's blocks.
class Nvfp4Transform final : public Nvfp4TransformBase {
 public:
  using Nvfp4TransformBase::Nvfp4TransformBase;

  // The hessian method scores 33 codes per block with a 16×16 quadratic form, plus the global
  // scale's search: about 1000 multiply-adds per weight. The others stream.
  std::uint64_t extra_cost(const PlanItem& item) const override {
    return method_ == fp4::ScaleMethod::Hessian ? weighted_cost(item, 1000, false) : 0;
  }

  std::string describe() const override {
    return fmt::format("nvfp4({}, {}{})", fp4::scale_method_name(method_),
                       output_format_name(format_), activations());
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    auto group = read_group(sources, outputs);
    const auto scales = global_scale(sources, group);
    const float s2 = scales.s2, stored = scales.stored;
    const auto& hessian_views = scales.hessian_views;
    std::vector<TensorQuality> quality;
    for (std::size_t m = 0; m < sources.size(); ++m) {
      const auto energy = fp4::quantize(group.views[m], s2, method_,
                                        buffers(output(outputs, m, 0), output(outputs, m, 1)),
                                        backend_, hessian_views[m]);
      write_scalars(outputs, m, stored);
      TensorQuality q;
      q.tensor = sources[m].info->name;
      q.signal_energy = energy.signal;
      q.error_energy = energy.error;
      q.elements = sources[m].info->element_count();
      quality.push_back(std::move(q));
    }
    return quality;
  }
};

// GPTQ on the NVFP4 grid (gptq_nvfp4.h). The group's s2 comes from the original weights as for
// `nvfp4`; members calibrated on one matrix (gate and up) are stacked into one sweep over one
// factorization, which every expert of the layer shares under all-experts calibration.
class Nvfp4GptqTransform final : public Nvfp4TransformBase {
 public:
  Nvfp4GptqTransform(const QuantizeRequest& request, fp4::ScaleMethod method,
                     NanPolicy nan_policy, fp4::Backend backend,
                     std::shared_ptr<HessianCache> cache, QuantizeStageTimes* stage_times)
      : Nvfp4TransformBase(request, method, nan_policy, backend, std::move(cache)),
        stage_times_(stage_times) {
    settings_.damp = request.integer.damp;
    settings_.act_order = request.integer.act_order;
    settings_.min_tokens = request.integer.min_tokens;
    settings_.order_block = gptq::kNvfp4OrderBlock;
    report_rtn_ = request.integer.report_rtn;
  }

  // The column sweep: about rows·cols² multiply-adds per matrix, as integer GPTQ's.
  std::uint64_t extra_cost(const PlanItem& item) const override {
    return weighted_cost(item, 0, true);
  }

  std::string describe() const override {
    return fmt::format("nvfp4-gptq({}, damp {}, {}act-order{}, {}{})",
                       fp4::scale_method_name(method_), settings_.damp,
                       settings_.act_order ? "" : "no ",
                       blend_tokens_ > 0 ? fmt::format(", blend {} tokens", blend_tokens_) : "",
                       output_format_name(format_), activations());
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    auto group = read_group(sources, outputs);
    const auto scales = global_scale(sources, group);
    const float s2 = scales.s2, stored = scales.stored;
    const auto& hessian_views = scales.hessian_views;
    std::vector<TensorQuality> quality(sources.size());
    for (const auto& [key, members] : members_by_statistics(*calibration_, sources))
      solve(key, members, s2, group, hessian_views, sources, outputs, quality);
    for (std::size_t m = 0; m < sources.size(); ++m) write_scalars(outputs, m, stored);
    return quality;
  }

 private:
  void solve(const std::string& key, const std::vector<std::size_t>& members, float s2,
             const Group& group, const std::vector<const fp4::BlockHessians*>& hessian_views,
             std::span<const SourceTensor> sources, std::span<const std::span<std::byte>> outputs,
             std::vector<TensorQuality>& quality) const {
    const std::uint64_t cols = sources[members[0]].info->shape[1];
    std::vector<float> stacked;
    for (std::size_t m : members) {
      const auto values = decode_weight(group.views[m]);
      stacked.insert(stacked.end(), values.begin(), values.end());
    }
    const std::uint64_t rows = stacked.size() / cols;
    const bool blended = !key.empty() && blended_ && blended_->blend_of(key).has_value();
    // The order differs from integer GPTQ's (whole blocks), so the cache entry is its own.
    const auto hessian = prepared_hessian(
        *cache_, *calibration_, key,
        fmt::format("{}#nvfp4#damp{}#{}#blend{}", key, settings_.damp,
                    settings_.act_order ? "act" : "natural", blend_tokens_),
        cols, settings_, backend_, stage_times_);
    std::vector<std::uint8_t> packed(rows * cols / 2), scales(rows * cols / fp4::kBlockSize);
    // Stacked members share a key, hence one matrix and one set of block Hessians.
    const auto sweep_start = std::chrono::steady_clock::now();
    const auto result = gptq::quantize_nvfp4(stacked, rows, cols, s2, method_, *hessian,
                                             hessian_views[members[0]], backend_, {packed, scales},
                                             report_rtn_);
    if (stage_times_) QuantizeStageTimes::add_since(stage_times_->sweep_ns, sweep_start);
    std::uint64_t first_row = 0;
    for (std::size_t m : members) {
      const TensorInfo& info = *sources[m].info;
      const std::uint64_t member_rows = info.shape[0];
      auto packed_out = output(outputs, m, 0);
      auto scales_out = output(outputs, m, 1);
      std::memcpy(packed_out.data(), packed.data() + first_row * cols / 2, packed_out.size());
      std::memcpy(scales_out.data(), scales.data() + first_row * cols / fp4::kBlockSize,
                  scales_out.size());
      first_row += member_rows;
      TensorQuality& q = quality[m];
      q.tensor = info.name;
      q.elements = info.element_count();
      // The weight error is the stacked problem's, shared out by rows.
      const double share = static_cast<double>(member_rows) / static_cast<double>(rows);
      q.signal_energy = result.energy.signal * share;
      q.error_energy = result.energy.error * share;
      q.relative_loss = result.relative_loss;
      if (result.rtn_computed) q.rtn_relative_loss = result.rtn_relative_loss;
      q.fallback = result.fallback;
      q.blended = blended && result.fallback.empty();
    }
  }

  QuantizeStageTimes* stage_times_;
  gptq::Settings settings_;
  bool report_rtn_ = true;
};

}  // namespace

std::shared_ptr<const Transform> make_nvfp4_transform(const QuantizeRequest& request,
                                                      QuantizerSettings& settings) {
  const auto method = fp4::parse_scale_method(request.scale_method);
  if (!method)
    throw_bad_input("plan.unknown_scale_method",
                    fmt::format("no NVFP4 scale method '{}' (max, mse, fp8-sweep, joint, hessian)",
                                request.scale_method));
  const bool calibrated =
      request.action == RecipeAction::Nvfp4Gptq || *method == fp4::ScaleMethod::Hessian;
  if (calibrated && !request.calibration)
    throw Error(ErrorClass::Internal, "nvfp4.no_calibration",
                "a calibrated NVFP4 transform without statistics");
  if (!settings.hessians) settings.hessians = std::make_shared<HessianCache>(settings.workers);
  const auto backend = backend_for(settings.device);
  if (request.action == RecipeAction::Nvfp4Gptq)
    return std::make_shared<Nvfp4GptqTransform>(request, *method, settings.nan_policy, backend,
                                                settings.hessians, settings.stage_times);
  return std::make_shared<Nvfp4Transform>(request, *method, settings.nan_policy, backend,
                                          settings.hessians);
}

}  // namespace qs
