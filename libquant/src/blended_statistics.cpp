#include "qs/quant/blended_statistics.h"

#include "qs/ckpt/model/tensor_name.h"

namespace qs {

BlendedStatistics::BlendedStatistics(const CalibrationStatistics& inner,
                                     std::uint64_t blend_tokens)
    : inner_(inner), blend_tokens_(blend_tokens) {}

const BlendedStatistics::Blended* BlendedStatistics::blended(const std::string& module) const {
  {
    std::lock_guard lock(mutex_);
    if (const auto found = blended_.find(module); found != blended_.end())
      return found->second.get();
  }
  // Outside the lock: the inner provider may wait (the pipelined job serves a layer's
  // statistics once that layer has run).
  std::unique_ptr<Blended> made;
  const auto parsed = parse_tensor_name(module + ".weight");
  // gate_proj and up_proj only: their inputs are the layer's hidden states, the same space for
  // every expert. A down_proj's inputs are its own expert's activations, which share no
  // meaning with another expert's, and blending them measurably hurt (docs/algorithms/gptq.md).
  const bool gate_up = parsed.role == TensorRole::ExpertGate || parsed.role == TensorRole::ExpertUp;
  if (gate_up && blend_tokens_ > 0) {
    const CalibrationEntry* own = inner_.find(module);
    const bool shared = own && !own->shared_with.empty();
    const std::uint64_t tokens = own ? own->tokens : 0;
    if (!shared && tokens < blend_tokens_) {
      const std::string prefix = module.substr(0, module.rfind(".experts.") + 8);
      const std::string pooled = pooled_gate_up_input(prefix);
      const CalibrationEntry* pool = inner_.find(pooled);
      // A pool of fewer token rows than its width is rank-deficient itself: no prior to lend.
      if (pool && pool->tokens >= pool->in_features &&
          (!own || own->in_features == pool->in_features)) {
        made = std::make_unique<Blended>();
        made->entry = CalibrationEntry{module, pool->in_features, blend_tokens_, {}, 0, 0,
                                       own ? own->input_amax : pool->input_amax};
        made->pooled = pooled;
        made->blend = {tokens, pool->tokens,
                       static_cast<double>(blend_tokens_ - tokens) /
                           static_cast<double>(pool->tokens)};
      }
    }
  }
  std::lock_guard lock(mutex_);
  auto& slot = blended_[module];
  if (!slot && made) slot = std::move(made);
  return slot.get();
}

const CalibrationEntry* BlendedStatistics::find(const std::string& module) const {
  if (const auto* blend = blended(module)) return &blend->entry;
  return inner_.find(module);
}

std::vector<double> BlendedStatistics::second_moments(const std::string& module) const {
  const auto* blend = blended(module);
  if (!blend) return inner_.second_moments(module);
  const auto pooled = inner_.second_moments(blend->pooled);
  std::vector<double> own = blend->blend.own_tokens > 0 ? inner_.second_moments(module)
                                                        : std::vector<double>(pooled.size(), 0.0);
  // One multiply-add per element in index order: the same result wherever it runs.
  for (std::size_t i = 0; i < own.size(); ++i) own[i] += blend->blend.pooled_weight * pooled[i];
  return own;
}

std::optional<BlendedStatistics::Blend> BlendedStatistics::blend_of(
    const std::string& module) const {
  if (const auto* blend = blended(module)) return blend->blend;
  return std::nullopt;
}

}  // namespace qs
