#include "vq_quality_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/model/tensor_name.h"
#include "qs/quant/int_group.h"
#include "qs/quant/vq_allocation_error.h"

namespace qs::bench {
namespace {

std::vector<float> load(const run::WeightLoader& loader, StudyModule& module) {
  auto matrix = loader.linear(module.name);
  module.rows = matrix.rows;
  module.cols = matrix.cols;
  return std::move(matrix.values);
}

std::uint64_t main_layers(const Checkpoint& checkpoint) {
  return checkpoint.config().at("num_hidden_layers").get<std::uint64_t>();
}

}  // namespace

std::vector<StudyModule> routed_experts(const Checkpoint& checkpoint,
                                        const CalibrationStore& statistics) {
  const run::WeightLoader loader(checkpoint);
  const std::uint64_t layers = main_layers(checkpoint);
  std::vector<StudyModule> modules;
  for (const auto& tensor : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(tensor.info->name);
    if (parsed.parameter_name != "weight" || !parsed.layer || *parsed.layer >= layers) continue;
    StudyModule module;
    switch (parsed.role) {
      case TensorRole::ExpertGate:
        module.projection = Projection::Gate;
        break;
      case TensorRole::ExpertUp:
        module.projection = Projection::Up;
        break;
      case TensorRole::ExpertDown:
        module.projection = Projection::Down;
        break;
      default:
        continue;
    }
    module.name = parsed.module_path;
    module.layer = *parsed.layer;
    module.expert = *parsed.expert;
    module.weight = load(loader, module);
    // Routing frequency relative to the layer's mean (1 = an average expert).
    if (const auto found = statistics.routing().find(module.layer);
        found != statistics.routing().end() && module.expert < found->second.size()) {
      const auto& counts = found->second;
      const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
      if (total > 0)
        module.frequency =
            static_cast<double>(counts[module.expert]) * static_cast<double>(counts.size()) / total;
    }
    modules.push_back(std::move(module));
  }
  std::sort(modules.begin(), modules.end(),
            [](const StudyModule& a, const StudyModule& b) { return a.name < b.name; });
  return modules;
}

std::vector<StudyModule> spine_linears(const Checkpoint& checkpoint) {
  const run::WeightLoader loader(checkpoint);
  const std::uint64_t layers = main_layers(checkpoint);
  std::vector<StudyModule> modules;
  for (const auto& tensor : checkpoint.tensors()) {
    const auto parsed = parse_tensor_name(tensor.info->name);
    if (parsed.parameter_name != "weight" || !parsed.layer || *parsed.layer >= layers) continue;
    switch (parsed.role) {
      case TensorRole::AttnQA:
      case TensorRole::AttnQB:
      case TensorRole::AttnKvA:
      case TensorRole::AttnKvB:
      case TensorRole::AttnO:
      case TensorRole::DenseGate:
      case TensorRole::DenseUp:
      case TensorRole::DenseDown:
      case TensorRole::SharedGate:
      case TensorRole::SharedUp:
      case TensorRole::SharedDown:
        break;
      default:
        continue;
    }
    StudyModule module;
    module.name = parsed.module_path;
    module.layer = *parsed.layer;
    module.weight = load(loader, module);
    modules.push_back(std::move(module));
  }
  std::sort(modules.begin(), modules.end(),
            [](const StudyModule& a, const StudyModule& b) { return a.name < b.name; });
  return modules;
}

std::string HessianBank::holder(const std::string& module) const {
  const auto* entry = statistics_.find(module);
  if (!entry) return {};
  return entry->shared_with.empty() ? module : entry->shared_with;
}

const std::vector<double>& HessianBank::moments(const std::string& module) {
  const auto key = holder(module);
  if (key.empty())
    throw_bad_input("calibration.missing_module", "no statistics for this module", {}, module);
  auto& slot = moments_[key];
  if (slot.empty()) slot = statistics_.second_moments(key);
  return slot;
}

const gptq::PreparedHessian* HessianBank::prepared(const std::string& module,
                                                   std::uint32_t order_block) {
  const auto key = holder(module);
  if (key.empty()) return nullptr;
  auto& slot = prepared_[{key, order_block}];
  if (!slot) {
    const auto* entry = statistics_.find(key);
    gptq::Settings settings;
    settings.order_block = order_block;
    slot = std::make_unique<gptq::PreparedHessian>(gptq::prepare_hessian(
        moments(module), entry->in_features, entry->tokens, settings, gptq::Backend::Cpu));
  }
  return slot.get();
}

std::vector<float> HessianBank::column_weights(const std::string& module) {
  const auto& h = moments(module);
  const auto n = static_cast<std::uint64_t>(std::llround(std::sqrt(static_cast<double>(h.size()))));
  std::vector<float> weights(n);
  double sum = 0.0;
  for (std::uint64_t i = 0; i < n; ++i) sum += h[i * n + i];
  const double mean = sum / static_cast<double>(n);
  for (std::uint64_t i = 0; i < n; ++i)
    weights[i] = mean > 0 ? static_cast<float>(h[i * n + i] / mean) : 1.0f;
  return weights;
}

vq::Codebook shared_codebook(const vq::Tier& tier, const std::vector<StudyModule>& modules,
                             HessianBank& hessians, std::uint64_t vectors, vq::Backend backend) {
  if (tier.kind == VqCodebookKind::Uniform) return vq::uniform_codebook(tier);
  // The same number of rows from every module (whole rows, so every column is represented).
  std::uint64_t per_row_total = 0;
  for (const auto& module : modules) per_row_total += module.cols / tier.d;
  const std::uint64_t rows_each =
      std::max<std::uint64_t>(1, (vectors + per_row_total - 1) / per_row_total);
  std::vector<float> points, weights;
  for (std::size_t m = 0; m < modules.size(); ++m) {
    const auto& module = modules[m];
    const auto column_weights = hessians.column_weights(module.name);
    for (const auto row : vq::sample_rows(module.rows, rows_each, 0xc0deb00c + m)) {
      const float* w = module.weight.data() + row * module.cols;
      for (std::uint64_t g = 0; g < module.cols; g += vq::kScaleGroup) {
        double squares = 0.0;
        for (std::uint64_t c = g; c < g + vq::kScaleGroup; ++c)
          squares += static_cast<double>(w[c]) * w[c];
        // The encoder's scale: the group's RMS in the weight's dtype.
        const float scale = intq::round_to_dtype(
            static_cast<float>(std::sqrt(squares / vq::kScaleGroup)), DType::BF16);
        if (scale == 0.0f) continue;  // an all-zero group: codes 0, nothing to learn
        for (std::uint64_t c = g; c < g + vq::kScaleGroup; ++c) {
          points.push_back(w[c] / scale);
          weights.push_back(column_weights[c]);
        }
      }
    }
  }
  return vq::fit_codebook(points, weights, tier, DType::F16, {}, backend);
}

void DecodedWeights::set(const StudyModule& module, std::vector<float> decoded) {
  entries_[module.name] = {module.rows, module.cols, std::move(decoded)};
}

void DecodedWeights::merge(const DecodedWeights& other) {
  for (const auto& [name, entry] : other.entries_) entries_[name] = entry;
}

std::optional<run::Matrix> DecodedWeights::linear(const std::string& module) const {
  const auto found = entries_.find(module);
  if (found == entries_.end()) return std::nullopt;
  run::Matrix matrix;
  matrix.module = module;
  matrix.rows = found->second.rows;
  matrix.cols = found->second.cols;
  matrix.values = found->second.values;
  return matrix;
}

}  // namespace qs::bench
