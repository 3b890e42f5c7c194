#include "integer_transforms.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/quant/blended_statistics.h"
#include "qs/quant/gptq.h"
#include "qs/quant/int_quantizer.h"
#include "hessian_cache.h"
#include "weight_guard.h"

namespace qs {

namespace {

intq::IntScheme scheme_of(const IntegerOptions& options) {
  const auto observer = intq::parse_observer(options.observer);
  if (!observer)
    throw_bad_input("plan.unknown_observer",
                    fmt::format("no observer '{}' (minmax, mse)", options.observer));
  return {{options.bits, options.symmetric}, options.group_size, *observer};
}

// Base for both: per member, the scheme's tensors in the pack-quantized format's output_specs
// order (qs/ckpt/formats/weight_format.h).
class IntegerTransformBase : public Transform {
 public:
  IntegerTransformBase(const IntegerOptions& options, NanPolicy nan_policy, fp4::Backend backend)
      : options_(options), scheme_(scheme_of(options)), nan_policy_(nan_policy),
        backend_(backend) {}

 protected:
  std::size_t outputs_per_member() const { return options_.symmetric ? 3 : 4; }

  void write_member(const intq::IntQuantized& quantized,
                    std::span<const std::span<std::byte>> outputs, std::size_t member) const {
    const auto first = outputs_per_member() * member;
    intq::pack(quantized, options_.bits, outputs[first], outputs[first + 1],
               options_.symmetric ? std::span<std::byte>() : outputs[first + 3]);
    const std::int64_t shape[2] = {static_cast<std::int64_t>(quantized.rows),
                                   static_cast<std::int64_t>(quantized.cols)};
    std::memcpy(outputs[first + 2].data(), shape, sizeof(shape));
  }

  void check_output_count(std::size_t sources, std::size_t outputs) const {
    if (outputs != sources * outputs_per_member())
      throw Error(ErrorClass::Internal, "int.outputs", "wrong number of output tensors");
  }

  IntegerOptions options_;
  intq::IntScheme scheme_;
  NanPolicy nan_policy_;
  fp4::Backend backend_;
};

class RoundToNearestTransform final : public IntegerTransformBase {
 public:
  using IntegerTransformBase::IntegerTransformBase;

  std::string describe() const override {
    return fmt::format("{}({}, pack-quantized)", options_.label(), options_.observer);
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    check_output_count(sources.size(), outputs.size());
    std::vector<TensorQuality> quality;
    for (std::size_t m = 0; m < sources.size(); ++m) {
      const TensorInfo& info = *sources[m].info;
      const fp4::WeightView source{info.dtype, sources[m].bytes, info.shape[0], info.shape[1]};
      std::vector<float> zeroed;
      auto view = finite_view(source, info, count_non_finite(source), nan_policy_, zeroed);
      // The zeroed copy back in the source dtype (exact: its values came from it), so the
      // arithmetic and the scales stay in that dtype.
      std::vector<std::byte> cleaned;
      if (view.dtype != info.dtype) {
        cleaned.resize(source.bytes.size());
        encode_from_f32(info.dtype, zeroed, cleaned);
        view = {info.dtype, cleaned, view.rows, view.cols};
      }
      intq::IntQuantized quantized;
      const auto energy = intq::quantize(view, scheme_, quantized, backend_);
      write_member(quantized, outputs, m);
      TensorQuality q;
      q.tensor = info.name;
      q.signal_energy = energy.signal;
      q.error_energy = energy.error;
      q.elements = info.element_count();
      quality.push_back(std::move(q));
    }
    return quality;
  }
};

class GptqTransform final : public IntegerTransformBase {
 public:
  GptqTransform(const IntegerOptions& options, NanPolicy nan_policy, fp4::Backend backend,
                const CalibrationStatistics* calibration, std::shared_ptr<HessianCache> cache,
                QuantizeStageTimes* stage_times)
      : IntegerTransformBase(options, nan_policy, backend),
        blended_(options.blend_tokens > 0
                     ? std::make_unique<BlendedStatistics>(*calibration, options.blend_tokens)
                     : nullptr),
        calibration_(blended_ ? blended_.get() : calibration),
        cache_(std::move(cache)),
        stage_times_(stage_times) {
    settings_.damp = options.damp;
    settings_.act_order = options.act_order;
    settings_.min_tokens = options.min_tokens;
  }

  // The column sweep costs about rows·cols² multiply-adds per weight (the Hessian's inverse
  // applied to every row); at the rate a CPU core sustains them against the rate a disk
  // streams bytes, kMultiplyAddsPerByte of them weigh as much as one byte read.
  std::uint64_t extra_cost(const PlanItem& item) const override {
    constexpr std::uint64_t kMultiplyAddsPerByte = 64;
    std::uint64_t cost = 0;
    for (const auto& source : item.sources) {
      const auto& shape = source.info->shape;
      if (shape.size() != 2) continue;
      const auto rows = static_cast<std::uint64_t>(shape[0]);
      const auto cols = static_cast<std::uint64_t>(shape[1]);
      cost += rows * cols * cols / kMultiplyAddsPerByte;
    }
    return cost;
  }

  std::string describe() const override {
    return fmt::format("gptq({}, damp {}, {}act-order{}, pack-quantized)", options_.label(),
                       options_.damp, options_.act_order ? "" : "no ",
                       options_.blend_tokens > 0
                           ? fmt::format(", blend {} tokens", options_.blend_tokens)
                           : "");
  }

  std::vector<TensorQuality> run(std::span<const SourceTensor> sources,
                                 std::span<const std::span<std::byte>> outputs) const override {
    check_output_count(sources.size(), outputs.size());
    std::vector<TensorQuality> quality(sources.size());
    for (const auto& [key, members] : members_by_statistics(*calibration_, sources))
      solve(key, members, sources, outputs, quality);
    return quality;
  }

 private:
  void solve(const std::string& key, const std::vector<std::size_t>& members,
             std::span<const SourceTensor> sources, std::span<const std::span<std::byte>> outputs,
             std::vector<TensorQuality>& quality) const {
    const TensorInfo& first = *sources[members[0]].info;
    const std::uint64_t cols = first.shape[1];
    const auto [stacked, row_offsets, rows] = stack_member_weights(members, sources, nan_policy_);
    const bool blended = !key.empty() && blended_ && blended_->blend_of(key).has_value();
    const auto hessian = prepared_hessian(*cache_, *calibration_, key, key, cols, settings_,
                                          backend_, stage_times_);
    intq::IntQuantized stacked_codes;
    const auto sweep_start = std::chrono::steady_clock::now();
    const auto result =
        gptq::quantize(stacked, rows, cols, first.dtype, scheme_, *hessian, backend_, stacked_codes,
                       options_.report_rtn);
    if (stage_times_) QuantizeStageTimes::add_since(stage_times_->sweep_ns, sweep_start);
    for (std::size_t i = 0; i < members.size(); ++i) {
      const TensorInfo& info = *sources[members[i]].info;
      write_member(rows_of(stacked_codes, row_offsets[i], info.shape[0]), outputs, members[i]);
      TensorQuality& q = quality[members[i]];
      q.tensor = info.name;
      q.elements = info.element_count();
      // The weight error is the stacked problem's, shared out by rows.
      const double share = static_cast<double>(info.shape[0]) / static_cast<double>(rows);
      q.signal_energy = result.energy.signal * share;
      q.error_energy = result.energy.error * share;
      q.relative_loss = result.relative_loss;
      if (result.rtn_computed) q.rtn_relative_loss = result.rtn_relative_loss;
      q.fallback = result.fallback;
      q.blended = blended && result.fallback.empty();
    }
  }

  static intq::IntQuantized rows_of(const intq::IntQuantized& all, std::uint64_t first,
                                    std::uint64_t count) {
    const std::uint64_t groups = all.groups();
    intq::IntQuantized part(count, all.cols, groups, all.scale_dtype);
    std::copy_n(all.codes.begin() + first * all.cols, count * all.cols, part.codes.begin());
    std::copy_n(all.scales.begin() + first * groups, count * groups, part.scales.begin());
    std::copy_n(all.zeros.begin() + first * groups, count * groups, part.zeros.begin());
    return part;
  }

  // Few-token experts filled up with the layer's pooled statistics (null: blend_tokens 0).
  std::unique_ptr<BlendedStatistics> blended_;
  const CalibrationStatistics* calibration_;
  std::shared_ptr<HessianCache> cache_;
  QuantizeStageTimes* stage_times_;
  gptq::Settings settings_;
};

}  // namespace

std::shared_ptr<const Transform> make_integer_transform(const QuantizeRequest& request,
                                                        QuantizerSettings& settings) {
  const auto backend = backend_for(settings.device);
  if (request.action == RecipeAction::Int)
    return std::make_shared<RoundToNearestTransform>(request.integer, settings.nan_policy, backend);
  if (!request.calibration)
    throw Error(ErrorClass::Internal, "gptq.no_calibration", "GPTQ transform without statistics");
  if (!settings.hessians) settings.hessians = std::make_shared<HessianCache>(settings.workers);
  return std::make_shared<GptqTransform>(request.integer, settings.nan_policy, backend,
                                         request.calibration, settings.hessians,
                                         settings.stage_times);
}

}  // namespace qs
