#include "qs/quant/quantize_transforms.h"
#include "qs/quant/dequantize_transform.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/weight_format.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/fp4_quantizer.h"
#include "transforms/fp8_block_transforms.h"
#include "transforms/integer_transforms.h"
#include "transforms/signal_guard.h"
#include "transforms/weight_guard.h"

namespace qs {
namespace {

// One fused group (or a lone Linear) to NVFP4: checks for NaN/Inf, picks the group's global
// scale, quantizes each member, and writes per member [codes, block scales, global scale] in
// the layout's scale convention (weight_format.h: modelopt stores s2, compressed-tensors its
// reciprocal, a divisor).
class Nvfp4Transform final : public Transform {
 public:
  Nvfp4Transform(OutputFormat format, fp4::ScaleMethod method, NanPolicy nan_policy,
                 fp4::Backend backend, std::vector<float> input_amax)
      : format_(format),
        reciprocal_(weight_format_for(CodeFamily::Nvfp4, format).scale_convention ==
                    ScaleConvention::Reciprocal),
        method_(method),
        nan_policy_(nan_policy),
        backend_(backend),
        input_amax_(std::move(input_amax)) {}

  std::string describe() const override {
    std::string activations;
    for (float amax : input_amax_) activations += fmt::format(", input amax {}", amax);
    return fmt::format("nvfp4({}, {}{})", fp4::scale_method_name(method_),
                       output_format_name(format_), activations);
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    const std::size_t kOutputsPerMember = input_amax_.empty() ? 3 : 4;
    if (outputs.size() != sources.size() * kOutputsPerMember)
      throw Error(ErrorClass::Internal, "nvfp4.outputs", "wrong number of output tensors");
    std::vector<std::vector<float>> zeroed(sources.size());
    std::vector<fp4::WeightView> views;
    float group_amax = 0.0f;
    for (std::size_t m = 0; m < sources.size(); ++m) {
      const TensorInfo& info = *sources[m].info;
      fp4::WeightView view{info.dtype, sources[m].bytes, info.shape[0], info.shape[1]};
      const auto scan = fp4::scan_amax(view);
      group_amax = std::max(group_amax, scan.amax);
      views.push_back(finite_view(view, info, scan.non_finite, nan_policy_, zeroed[m]));
    }
    const float s2 = fp4::choose_global_scale(views, group_amax, method_, backend_);
    const float stored_global = reciprocal_ ? 1.0f / s2 : s2;
    // A weight whose largest magnitude is below ~8e-36 has s2 = amax/2688 so small that the
    // compressed-tensors divisor 1/s2 is Inf: never write a non-finite scale.
    if (!std::isfinite(stored_global) || !(s2 > 0.0f))
      throw_bad_input("nvfp4.scale_overflow",
                      fmt::format("its largest magnitude {} gives the global scale {} whose {} is "
                                  "not a finite fp32; keep it unquantized with a recipe rule",
                                  group_amax, s2, reciprocal_ ? "reciprocal" : "value"),
                      {}, sources[0].info->name);
    std::vector<TensorQuality> quality;
    for (std::size_t m = 0; m < sources.size(); ++m) {
      auto packed = outputs[kOutputsPerMember * m];
      auto scales = outputs[kOutputsPerMember * m + 1];
      auto global = outputs[kOutputsPerMember * m + 2];
      const auto energy =
          fp4::quantize(views[m], s2, method_,
                        {{reinterpret_cast<std::uint8_t*>(packed.data()), packed.size()},
                         {reinterpret_cast<std::uint8_t*>(scales.data()), scales.size()}},
                        backend_);
      std::memcpy(global.data(), &stored_global, sizeof(float));
      if (!input_amax_.empty()) {
        // The multiplier is amax/(6·448); the input scale follows the global's convention.
        const float amax = input_amax_[m];
        const float input_scale = reciprocal_ ? (fp4::kE2M1Max * fp4::kE4M3Max) / amax
                                              : amax / (fp4::kE2M1Max * fp4::kE4M3Max);
        std::memcpy(outputs[kOutputsPerMember * m + 3].data(), &input_scale, sizeof(float));
      }
      TensorQuality q;
      q.tensor = sources[m].info->name;
      q.signal_energy = energy.signal;
      q.error_energy = energy.error;
      q.elements = sources[m].info->element_count();
      quality.push_back(std::move(q));
    }
    return quality;
  }

 private:
  OutputFormat format_;
  bool reciprocal_;  // the stored scales are divisors (compressed-tensors)
  fp4::ScaleMethod method_;
  NanPolicy nan_policy_;
  fp4::Backend backend_;
  std::vector<float> input_amax_;
};

}  // namespace

std::optional<NanPolicy> parse_nan_policy(std::string_view text) {
  if (text == "error") return NanPolicy::Error;
  if (text == "zero") return NanPolicy::Zero;
  return std::nullopt;
}

namespace {

std::shared_ptr<const Transform> make_unguarded_transform(const QuantizeRequest& request,
                                                          QuantizerSettings& settings) {
  if (is_integer(request.action)) return make_integer_transform(request, settings);
  if (request.action == RecipeAction::Fp8Block) return make_fp8_block_transform(settings);
  const auto method = fp4::parse_scale_method(request.scale_method);
  if (!method)
    throw_bad_input("plan.unknown_scale_method",
                    fmt::format("no NVFP4 scale method '{}' (max, mse, fp8-sweep, joint)",
                                request.scale_method));
  return std::make_shared<Nvfp4Transform>(request.format, *method, settings.nan_policy,
                                          backend_for(settings.device), request.input_amax);
}

}  // namespace

std::shared_ptr<const Transform> make_quantize_transform(const QuantizeRequest& request,
                                                         QuantizerSettings& settings) {
  if (!is_quantizing(request.action)) {
    // An FP8 block-scaled Linear no rule quantizes: decoded to the dtype the plan asks for.
    if (request.encoded_members.size() != 1 || !request.encoded_members[0])
      throw Error(ErrorClass::Internal, "plan.not_quantizing",
                  fmt::format("a quantizing transform was asked for action {}",
                              recipe_action_name(request.action)));
    return make_dequantize_transform(*request.encoded_members[0]);
  }
  auto quantizer =
      with_signal_floor(make_unguarded_transform(request, settings), settings.min_snr_db);
  if (request.encoded_members.empty()) return quantizer;
  return with_decoded_members(std::move(quantizer), request.encoded_members);
}

}  // namespace qs
