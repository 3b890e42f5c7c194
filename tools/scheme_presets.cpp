#include "scheme_presets.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "qs/ckpt/core/error.h"

namespace qs::cli {
namespace {

// ModelOpt's default preset minus its indexer hazard (docs/formats/modelopt-nvfp4.md, "Presets").
// Integer schemes are written as compressed-tensors pack-quantized.
constexpr const char* kSchemeRecipe = R"(
description: every Linear in {scheme} except lm_head, routers, the indexer and MTP layers
format: {format}
rules:
  - name: MTP layers stay BF16
    mtp: true
    action: keep
  - name: lm_head, router, indexer and MTP projections stay BF16
    category: [lm_head, router, indexer, mtp_extra]
    action: keep
  - name: every other Linear
    action: {scheme}
)";

// What DeepSeek's fp8_cast_bf16.py does: FP8 block-scaled Linears decoded to BF16 (every
// Linear no rule quantizes is), every other tensor unchanged, no quantization_config.
constexpr const char* kBf16Recipe = R"(
description: FP8 block-scaled Linears decoded to BF16, every other tensor unchanged
rules:
  - name: every tensor as the model holds it (FP8 block-scaled Linears decode to BF16)
    action: keep
)";

constexpr const char* kDraftSchemeRecipe = R"(
description: the MTP draft's Linears in {scheme} except its router, indexer and MTP projections
format: {format}
rules:
  - name: router, indexer, eh_proj and shared head stay BF16
    category: [lm_head, router, indexer, mtp_extra, embedding]
    action: keep
  - name: every other Linear
    action: {scheme}
)";

std::string preset_text(const char* text, const std::string& scheme) {
  const auto& names = scheme_names();
  if (std::find(names.begin(), names.end(), scheme) == names.end())
    throw_bad_input("cli.unknown_scheme",
                    fmt::format("no scheme '{}' (available: {})", scheme, fmt::join(names, ", ")));
  if (scheme == "bf16") return kBf16Recipe;
  // fp8-block writes DeepSeek's layout and config whatever the format key says.
  const bool modelopt = scheme == "nvfp4" || scheme == "nvfp4-gptq" || scheme == "fp8-block";
  return fmt::format(fmt::runtime(text), fmt::arg("scheme", scheme),
                     fmt::arg("format", modelopt ? "modelopt" : "compressed-tensors"));
}

}  // namespace

const std::vector<std::string>& scheme_names() {
  static const std::vector<std::string> names = {
      "nvfp4",     "nvfp4-gptq", "int8",      "int8-channel", "int4", "int4-g32",
      "gptq-int4", "gptq-int8",  "fp8-block", "bf16"};
  return names;
}

std::string scheme_recipe_text(const std::string& scheme) {
  return preset_text(kSchemeRecipe, scheme);
}

std::string draft_scheme_recipe_text(const std::string& scheme) {
  return preset_text(kDraftSchemeRecipe, scheme);
}

std::map<std::string, std::string> parse_parameters(const std::vector<std::string>& texts) {
  std::map<std::string, std::string> parameters;
  for (const auto& text : texts) {
    const auto equals = text.find('=');
    if (equals == std::string::npos || equals == 0)
      throw_bad_input("cli.bad_param", fmt::format("--param '{}': expected NAME=VALUE", text));
    parameters[text.substr(0, equals)] = text.substr(equals + 1);
  }
  return parameters;
}

}  // namespace qs::cli
