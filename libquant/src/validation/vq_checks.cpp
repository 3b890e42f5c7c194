#include "vq_checks.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <set>

#include "qs/ckpt/core/codecs.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/formats/quantization_detection.h"
#include "qs/ckpt/formats/vq_declaration.h"
#include "qs/quant/vq.h"

namespace qs::validation {
namespace {

constexpr const char* kCheck = "vq";

void add_error(ValidationReport& report, const Error& error) {
  report.add(Severity::Problem, kCheck, error.kind(), error.detail(), error.file(), error.tensor());
}

std::vector<float> read_values(const TensorLocation& location) {
  std::vector<float> values(location.info->element_count());
  decode_to_f32(location.info->dtype, location.shard->read(*location.info), values);
  return values;
}

// Codes unpacked (each below K), scales finite and not negative (0: an all-zero group).
bool check_values(const QuantizedWeight& weight, ValidationReport& report) {
  const auto& codes = weight.sources[0];
  const auto& scales = weight.sources[1];
  const VqTier& tier = *weight.request.vq_tier;
  const auto bytes = codes.shard->read(*codes.info);
  std::vector<std::int32_t> packed(bytes.size() / sizeof(std::int32_t));
  std::memcpy(packed.data(), bytes.data(), packed.size() * sizeof(std::int32_t));
  std::vector<std::uint32_t> unpacked(weight.request.rows * (weight.request.cols / tier.d));
  try {
    vq::unpack_codes(packed, weight.request.rows, weight.request.cols, tier, unpacked);
  } catch (const Error& error) {
    report.add(Severity::Problem, kCheck, "vq.code_range", error.detail(),
               codes.shard->path().string(), codes.info->name);
    return false;
  }
  const auto values = read_values(scales);
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]) || values[i] < 0.0f) {
      report.add(Severity::Problem, kCheck, "vq.bad_scale",
                 fmt::format("the scale of row {}, group {} is {}; scales are finite and not "
                             "negative",
                             i / weight.request.groups, i % weight.request.groups, values[i]),
                 scales.shard->path().string(), scales.info->name);
      return false;
    }
  return true;
}

}  // namespace

std::map<std::string, QuantizedWeight> check_vq(const Checkpoint& checkpoint,
                                                ValidationReport& report) {
  std::map<std::string, QuantizedWeight> usable;
  const auto modules = modules_of(checkpoint);
  std::vector<std::string> stored;
  for (const auto& [module, parameters] : modules)
    if (detect_weight_format(parameters).layout == WeightLayout::Vq) stored.push_back(module);
  VqDeclaration declaration;
  bool declared_config = false;
  try {
    declaration = VqDeclaration::of(checkpoint);
    declared_config = !declaration.empty() || !declaration.tiers().empty();
  } catch (const Error& error) {
    report.checks_run.push_back(kCheck);
    add_error(report, error);
    return usable;
  }
  if (stored.empty() && !declared_config) return usable;
  report.checks_run.push_back(kCheck);

  const std::string config_file = (checkpoint.directory() / "config.json").string();
  for (const auto& [module, declared] : declaration.modules())
    if (!modules.contains(module) ||
        detect_weight_format(modules.at(module)).layout != WeightLayout::Vq)
      report.add(Severity::Problem, kCheck, "vq.missing_module",
                 fmt::format("config.json declares {} as VQ (tier {}), but the checkpoint "
                             "stores no vq_codes and vq_scales for it",
                             module, declared.tier),
                 config_file, module);

  std::set<std::string> checked_codebooks;
  for (const auto& module : stored) {
    const auto& parameters = modules.at(module);
    if (!declaration.module(module)) {
      const auto& codes = *code_tensor(parameters);
      report.add(Severity::Problem, kCheck, "vq.undeclared_module",
                 "VQ tensors, but config.json's quantization_config.vq.modules does not "
                 "declare the module (its tier and codebook): nothing can decode it",
                 codes.shard->path().string(), codes.info->name);
      continue;
    }
    try {
      const auto with = declaration.with_codebook(checkpoint, module, parameters, "vq.invalid");
      auto weight = weight_format(WeightLayout::Vq).check(module, with, 0, "vq.invalid");
      const auto& codebook = weight.sources[2];
      if (checked_codebooks.insert(codebook.info->name).second) {
        const auto values = read_values(codebook);
        for (std::size_t i = 0; i < values.size(); ++i)
          if (!std::isfinite(values[i])) {
            report.add(Severity::Problem, kCheck, "vq.bad_codebook",
                       fmt::format("codeword {} holds {} at position {}", i / codebook.info->shape[1],
                                   values[i], i % codebook.info->shape[1]),
                       codebook.shard->path().string(), codebook.info->name);
            break;
          }
      }
      // The declared tier's name, for messages and --ref's labels.
      weight.request.vq_tier->name = declaration.tier_of(module)->name;
      if (check_values(weight, report)) usable.emplace(module, std::move(weight));
    } catch (const Error& error) {
      add_error(report, error);
    }
  }
  return usable;
}

}  // namespace qs::validation
