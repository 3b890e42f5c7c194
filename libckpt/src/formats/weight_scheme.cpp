#include "qs/ckpt/formats/weight_scheme.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <utility>

namespace qs {
namespace {

constexpr std::array kFormatNames{
    std::pair{OutputFormat::Modelopt, "modelopt"},
    std::pair{OutputFormat::CompressedTensors, "compressed-tensors"},
};

}  // namespace

std::string IntegerOptions::label() const {
  return fmt::format(
      "int{}-{}-{}", bits,
      group_size == kChannelGroup ? std::string("channel") : fmt::format("g{}", group_size),
      symmetric ? "sym" : "asym");
}

std::optional<VqTier> VqOptions::pinned() const {
  if (tiers.size() == 1) return tiers.front();
  return std::nullopt;
}

std::string VqOptions::label() const {
  std::vector<std::string> names;
  for (const auto& tier : tiers) names.push_back(tier.name);
  std::string text = fmt::format("{}", fmt::join(names, "|"));
  if (allocated() && target_bpw) text += fmt::format("@{}", *target_bpw);
  return text;
}

const char* vq_scope_name(VqCodebookScope scope) {
  return scope == VqCodebookScope::Layer ? "layer" : "model";
}
const char* vq_compensation_name(VqCompensation compensation) {
  return compensation == VqCompensation::None ? "none" : "gptq";
}
const char* vq_metric_name(VqMetricChoice metric) {
  return metric == VqMetricChoice::Euclidean ? "euclidean" : "mahalanobis";
}
const char* vq_update_name(VqUpdateChoice update) {
  return update == VqUpdateChoice::Diagonal ? "diagonal" : "exact";
}

std::optional<OutputFormat> parse_output_format(std::string_view text) {
  for (const auto& [format, name] : kFormatNames)
    if (text == name) return format;
  return std::nullopt;
}

const char* output_format_name(OutputFormat format) {
  return kFormatNames[static_cast<std::size_t>(format)].second;
}

}  // namespace qs
