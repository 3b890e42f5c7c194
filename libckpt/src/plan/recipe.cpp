#include "qs/ckpt/plan/recipe.h"

#include <fmt/format.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <set>
#include <utility>

#include "qs/ckpt/core/byte_size.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"

namespace qs {
namespace {

constexpr std::array kActionNames{
    std::pair{RecipeAction::Keep, "keep"},   std::pair{RecipeAction::CastBf16, "bf16"},
    std::pair{RecipeAction::CastF16, "f16"}, std::pair{RecipeAction::CastF32, "f32"},
    std::pair{RecipeAction::Nvfp4, "nvfp4"}, std::pair{RecipeAction::Int, "int"},
    std::pair{RecipeAction::Gptq, "gptq"},   std::pair{RecipeAction::Fp8Block, "fp8-block"},
    std::pair{RecipeAction::Nvfp4Gptq, "nvfp4-gptq"}, std::pair{RecipeAction::Vq, "vq"},
};

struct IntegerPreset {
  const char* name;
  RecipeAction action;
  int bits;
  bool symmetric;
  std::int64_t group_size;
};
constexpr std::array kIntegerPresets{
    IntegerPreset{"int8", RecipeAction::Int, 8, true, 128},
    IntegerPreset{"int8-channel", RecipeAction::Int, 8, true, kChannelGroup},
    IntegerPreset{"int4", RecipeAction::Int, 4, false, 128},
    IntegerPreset{"int4-g32", RecipeAction::Int, 4, false, 32},
    IntegerPreset{"gptq-int4", RecipeAction::Gptq, 4, false, 128},
    IntegerPreset{"gptq-int8", RecipeAction::Gptq, 8, true, 128},
};

constexpr std::array kRecipeKeys{"description", "format",     "parameters",
                                 "rules",       "defaults",   "max_shard_size",
                                 "kv_cache",    "activations", "min_snr_db",
                                 "vq_tiers"};
constexpr std::array kRuleKeys{"name",     "category",   "role",     "module",  "layers",
                               "mtp",      "action",     "scale_method", "bits", "symmetric",
                               "group_size", "observer", "damp",     "act_order", "min_tokens", "blend_tokens",
                               "report_rtn", "tiers", "target_bpw", "codebooks", "compensation",
                               "metric", "update", "refine", "refit_scales", "gain_correction",
                               "allocation_estimate", "allocation_routing",
                               "allocation_output_space"};
constexpr std::array kVqKeys{"tiers",  "target_bpw", "codebooks", "compensation",
                             "metric", "update",     "refine",    "refit_scales",
                             "gain_correction", "allocation_estimate", "allocation_routing",
                             "allocation_output_space"};
constexpr std::array kVqGptqKeys{"damp", "act_order", "min_tokens", "blend_tokens"};
constexpr std::array kVqTierKeys{"d", "k", "codebook"};
constexpr std::array kIntegerKeys{"bits", "symmetric", "group_size", "observer"};
constexpr std::array kGptqKeys{"damp", "act_order", "min_tokens", "blend_tokens", "report_rtn"};
constexpr std::array kDefaultKeys{"scale_method"};

std::string trim(std::string_view text) {
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return {};
  const auto end = text.find_last_not_of(" \t");
  return std::string(text.substr(begin, end - begin + 1));
}

std::optional<std::uint32_t> parse_index(std::string_view text) {
  std::uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return {};
  return value;
}

// Errors name the recipe file and, inside rules, the rule.
class RecipeReader {
 public:
  RecipeReader(std::string source, std::map<std::string, std::string> parameters)
      : source_(std::move(source)), parameters_(std::move(parameters)) {}

  [[noreturn]] void fail(const std::string& kind, const std::string& message) const {
    throw_bad_input(kind, context_.empty() ? message : context_ + ": " + message, source_);
  }
  void set_context(std::string context) { context_ = std::move(context); }

  template <std::size_t N>
  void check_keys(const YAML::Node& map, const std::array<const char*, N>& allowed,
                  std::string_view where) const {
    if (!map.IsMap()) fail("recipe.invalid", fmt::format("{} must be a mapping", where));
    for (const auto& entry : map) {
      const auto key = entry.first.as<std::string>();
      if (std::find_if(allowed.begin(), allowed.end(),
                       [&](const char* name) { return key == name; }) == allowed.end())
        fail("recipe.unknown_key", fmt::format("unknown key '{}' in {} (allowed: {})", key, where,
                                               fmt::join(allowed, ", ")));
    }
  }

  std::string scalar(const YAML::Node& node, std::string_view what) const {
    if (!node.IsScalar()) fail("recipe.invalid", fmt::format("{} must be a string", what));
    return substitute(node.as<std::string>());
  }

  std::vector<std::string> strings(const YAML::Node& node, std::string_view what) const {
    std::vector<std::string> values;
    if (node.IsSequence()) {
      for (const auto& element : node) values.push_back(scalar(element, what));
    } else {
      values.push_back(scalar(node, what));
    }
    return values;
  }

  // "{name}" → the parameter's value.
  std::string substitute(const std::string& text) const {
    std::string result;
    std::size_t position = 0;
    while (position < text.size()) {
      const auto open = text.find('{', position);
      if (open == std::string::npos) break;
      const auto close = text.find('}', open);
      if (close == std::string::npos) break;
      const std::string name = text.substr(open + 1, close - open - 1);
      const auto found = parameters_.find(name);
      if (found == parameters_.end())
        fail("recipe.unknown_parameter",
             fmt::format("'{{{}}}' names no parameter of the recipe", name));
      result += text.substr(position, open - position) + found->second;
      position = close + 1;
    }
    return result + text.substr(position);
  }

 private:
  std::string source_;
  std::string context_;
  std::map<std::string, std::string> parameters_;
};

bool read_bool(const YAML::Node& node, std::string_view what, const RecipeReader& reader) {
  const auto text = reader.scalar(node, what);
  if (text != "true" && text != "false")
    reader.fail("recipe.invalid", fmt::format("{} must be true or false", what));
  return text == "true";
}

template <typename Number>
Number read_number(const YAML::Node& node, std::string_view what, Number low, Number high,
                   const RecipeReader& reader) {
  const auto text = reader.scalar(node, what);
  try {
    std::size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size() && value >= static_cast<double>(low) &&
        value <= static_cast<double>(high) && static_cast<double>(static_cast<Number>(value)) == value)
      return static_cast<Number>(value);
  } catch (const std::exception&) {
  }
  reader.fail("recipe.invalid", fmt::format("{} must be a number in [{}, {}], not '{}'", what, low,
                                            high, text));
}

void read_integer_options(const YAML::Node& node, RecipeRule& rule, const RecipeReader& reader) {
  const bool integer = is_integer(rule.action);
  for (const char* key : kIntegerKeys)
    if (node[key] && !integer)
      reader.fail("recipe.invalid", fmt::format("{} only applies to integer actions", key));
  const auto vq_knob = [](std::string_view key) {
    return std::find(kVqGptqKeys.begin(), kVqGptqKeys.end(), key) != kVqGptqKeys.end();
  };
  for (const char* key : kGptqKeys)
    if (node[key] && rule.action != RecipeAction::Gptq && rule.action != RecipeAction::Nvfp4Gptq &&
        !((std::string_view(key) == "damp" || std::string_view(key) == "blend_tokens") &&
          rule.action == RecipeAction::Nvfp4) &&
        !(vq_knob(key) && rule.action == RecipeAction::Vq))
      reader.fail("recipe.invalid",
                  fmt::format("{} only applies to gptq and nvfp4-gptq actions", key));
  auto& options = rule.integer;
  if (node["bits"]) options.bits = read_number<int>(node["bits"], "bits", 2, 8, reader);
  if (node["symmetric"]) options.symmetric = read_bool(node["symmetric"], "symmetric", reader);
  if (const auto group = node["group_size"]) {
    if (reader.scalar(group, "group_size") == "channel")
      options.group_size = kChannelGroup;
    else
      options.group_size = read_number<std::int64_t>(group, "group_size", 1, 1 << 20, reader);
  }
  if (const auto observer = node["observer"]) {
    options.observer = reader.scalar(observer, "observer");
    if (options.observer != "minmax" && options.observer != "mse")
      reader.fail("recipe.invalid", "observer must be minmax or mse");
  }
  if (node["damp"]) options.damp = read_number<double>(node["damp"], "damp", 0.0, 10.0, reader);
  if (node["act_order"]) options.act_order = read_bool(node["act_order"], "act_order", reader);
  if (node["min_tokens"])
    options.min_tokens =
        read_number<std::uint64_t>(node["min_tokens"], "min_tokens", 0, 1ull << 50, reader);
  if (node["report_rtn"]) options.report_rtn = read_bool(node["report_rtn"], "report_rtn", reader);
  if (node["blend_tokens"])
    options.blend_tokens =
        read_number<std::uint64_t>(node["blend_tokens"], "blend_tokens", 0, 1ull << 50, reader);
}

// One choice among named values ("codebooks: model"), by the names' functions.
template <typename Enum, std::size_t N>
Enum read_choice(const YAML::Node& node, std::string_view what,
                 const std::array<std::pair<Enum, const char*>, N>& choices,
                 const RecipeReader& reader) {
  const auto text = reader.scalar(node, what);
  std::vector<std::string> names;
  for (const auto& [value, name] : choices) {
    if (text == name) return value;
    names.push_back(name);
  }
  reader.fail("recipe.invalid",
              fmt::format("{} must be one of {}, not '{}'", what, fmt::join(names, ", "), text));
}

// A tier by name: the recipe's own vq_tiers first, then the presets.
VqTier vq_tier_named(const std::string& name, const std::map<std::string, VqTier>& custom,
                     const RecipeReader& reader) {
  if (const auto found = custom.find(name); found != custom.end()) return found->second;
  if (auto preset = preset_vq_tier(name)) return *preset;
  std::vector<std::string> known;
  for (const auto& tier : preset_vq_tiers()) known.push_back(tier.name);
  for (const auto& [custom_name, tier] : custom) known.push_back(custom_name);
  reader.fail("recipe.vq_tier",
              fmt::format("no VQ tier '{}' (known: {}; add it under vq_tiers)", name,
                          fmt::join(known, ", ")));
}

void read_vq_options(const YAML::Node& node, RecipeRule& rule,
                     const std::map<std::string, VqTier>& custom_tiers,
                     const RecipeReader& reader) {
  if (rule.action != RecipeAction::Vq) {
    for (const char* key : kVqKeys)
      if (node[key]) reader.fail("recipe.invalid", fmt::format("{} only applies to vq", key));
    return;
  }
  auto& options = rule.vq;
  if (!node["tiers"])
    reader.fail("recipe.vq_tier", "a vq rule needs tiers (e.g. tiers: [vq2], or [vq1, vq2, vq3])");
  for (const auto& name : reader.strings(node["tiers"], "tiers")) {
    const VqTier tier = vq_tier_named(name, custom_tiers, reader);
    if (std::any_of(options.tiers.begin(), options.tiers.end(),
                    [&](const VqTier& listed) { return listed.name == tier.name; }))
      reader.fail("recipe.vq_tier", fmt::format("tier '{}' is listed twice", name));
    options.tiers.push_back(tier);
  }
  if (options.tiers.empty()) reader.fail("recipe.vq_tier", "tiers must name at least one tier");
  if (const auto target = node["target_bpw"])
    options.target_bpw = read_number<double>(target, "target_bpw", 0.0, 64.0, reader);
  if (options.allocated()) {
    if (!options.target_bpw)
      reader.fail("recipe.vq_target_bpw",
                  fmt::format("{} tiers need target_bpw: the average bits per weight the "
                              "allocator reaches",
                              options.tiers.size()));
    double cheapest = options.tiers.front().bits_per_weight();
    for (const auto& tier : options.tiers) cheapest = std::min(cheapest, tier.bits_per_weight());
    if (*options.target_bpw < cheapest)
      reader.fail("vq.budget",
                  fmt::format("target_bpw {} is below the cheapest tier's {} bits per weight "
                              "(codes and BF16 scales)",
                              *options.target_bpw, cheapest));
  }
  if (node["codebooks"])
    options.codebooks = read_choice(
        node["codebooks"], "codebooks",
        std::array{std::pair{VqCodebookScope::Model, "model"},
                   std::pair{VqCodebookScope::Layer, "layer"}},
        reader);
  if (node["compensation"])
    options.compensation = read_choice(node["compensation"], "compensation",
                                       std::array{std::pair{VqCompensation::Gptq, "gptq"},
                                                  std::pair{VqCompensation::None, "none"}},
                                       reader);
  if (node["metric"])
    options.metric =
        read_choice(node["metric"], "metric",
                    std::array{std::pair{VqMetricChoice::Mahalanobis, "mahalanobis"},
                               std::pair{VqMetricChoice::Euclidean, "euclidean"}},
                    reader);
  if (node["update"])
    options.update = read_choice(node["update"], "update",
                                 std::array{std::pair{VqUpdateChoice::Exact, "exact"},
                                            std::pair{VqUpdateChoice::Diagonal, "diagonal"}},
                                 reader);
  if (node["refine"])
    options.refine = read_number<std::uint32_t>(node["refine"], "refine", 0, 1000, reader);
  if (node["refit_scales"])
    options.refit_scales = read_bool(node["refit_scales"], "refit_scales", reader);
  if (node["gain_correction"])
    options.gain_correction = read_bool(node["gain_correction"], "gain_correction", reader);
  if (node["allocation_estimate"])
    options.allocation_estimate =
        read_choice(node["allocation_estimate"], "allocation_estimate",
                    std::array{std::pair{VqAllocationEstimate::Compensated, "compensated"},
                               std::pair{VqAllocationEstimate::Plain, "plain"}},
                    reader);
  if (node["allocation_routing"])
    options.allocation_routing = read_bool(node["allocation_routing"], "allocation_routing", reader);
  if (node["allocation_output_space"])
    options.allocation_output_space =
        read_bool(node["allocation_output_space"], "allocation_output_space", reader);
}

// `vq_tiers:` name → {d, k[, codebook]}.
std::map<std::string, VqTier> read_vq_tiers(const YAML::Node& node, RecipeReader& reader) {
  std::map<std::string, VqTier> tiers;
  if (!node) return tiers;
  if (!node.IsMap()) reader.fail("recipe.invalid", "vq_tiers must be a mapping of name: {d, k}");
  for (const auto& entry : node) {
    const auto name = entry.first.as<std::string>();
    reader.set_context(fmt::format("vq_tiers '{}'", name));
    if (name.empty() || preset_vq_tier(name))
      reader.fail("recipe.vq_tier",
                  name.empty() ? std::string("a tier needs a name")
                               : fmt::format("'{}' is a preset tier; give the custom one "
                                             "another name",
                                             name));
    reader.check_keys(entry.second, kVqTierKeys, "a VQ tier");
    if (!entry.second["d"] || !entry.second["k"]) reader.fail("recipe.vq_tier", "a tier needs d and k");
    VqTier tier;
    tier.name = name;
    tier.d = read_number<std::uint32_t>(entry.second["d"], "d", 1, 1u << 20, reader);
    tier.k = read_number<std::uint32_t>(entry.second["k"], "k", 1, 1u << 30, reader);
    if (const auto kind = entry.second["codebook"]) {
      const auto text = reader.scalar(kind, "codebook");
      const auto parsed = parse_vq_codebook_kind(text);
      if (!parsed) reader.fail("recipe.vq_tier", "codebook must be learned or uniform");
      tier.kind = *parsed;
    }
    if (auto problem = vq_tier_problem(tier); !problem.empty())
      reader.fail("recipe.vq_tier", problem);
    tiers.emplace(name, tier);
  }
  reader.set_context({});
  return tiers;
}

RecipeRule read_rule(const YAML::Node& node, std::size_t index, RecipeReader& reader,
                     const std::map<std::string, VqTier>& custom_tiers) {
  RecipeRule rule;
  rule.name = node["name"] ? node["name"].as<std::string>() : fmt::format("rule {}", index + 1);
  reader.set_context(fmt::format("rule {} ('{}')", index + 1, rule.name));
  reader.check_keys(node, kRuleKeys, "a rule");
  if (const auto categories = node["category"]) {
    for (const auto& text : reader.strings(categories, "category")) {
      auto category = parse_category_name(text);
      if (!category) reader.fail("recipe.unknown_category", fmt::format("no category '{}'", text));
      rule.categories.push_back(*category);
    }
  }
  if (const auto roles = node["role"]) {
    for (const auto& text : reader.strings(roles, "role")) {
      auto role = parse_role_name(text);
      if (!role) reader.fail("recipe.unknown_role", fmt::format("no role '{}'", text));
      rule.roles.push_back(*role);
    }
  }
  if (const auto modules = node["module"])
    for (const auto& text : reader.strings(modules, "module")) {
      try {
        rule.modules.push_back(NamePattern::parse(text));
      } catch (const Error& error) {
        reader.fail(error.kind(), error.detail());
      }
    }
  if (const auto layers = node["layers"]) {
    try {
      rule.layers = LayerSelector::parse(reader.scalar(layers, "layers"));
    } catch (const Error& error) {
      reader.fail(error.kind(), error.detail());
    }
  }
  if (const auto mtp = node["mtp"]) rule.mtp = read_bool(mtp, "mtp", reader);
  if (!node["action"]) reader.fail("recipe.missing_action", "a rule needs an action");
  const auto action_text = reader.scalar(node["action"], "action");
  auto action = parse_recipe_action(action_text);
  if (auto preset = parse_integer_preset(action_text)) {
    action = preset->first;
    rule.integer = preset->second;
  }
  if (!action)
    reader.fail("recipe.unknown_action",
                fmt::format("no action '{}' (keep, bf16, f16, f32, nvfp4, nvfp4-gptq, int, gptq, "
                            "fp8-block, vq, int8, int8-channel, int4, int4-g32, gptq-int4, gptq-int8)",
                            action_text));
  rule.action = *action;
  if (const auto method = node["scale_method"]) {
    if (!is_nvfp4(rule.action))
      reader.fail("recipe.invalid", "scale_method only applies to nvfp4 and nvfp4-gptq");
    rule.scale_method = reader.scalar(method, "scale_method");
  }
  read_integer_options(node, rule, reader);
  read_vq_options(node, rule, custom_tiers, reader);
  reader.set_context({});
  return rule;
}

std::map<std::string, std::string> read_parameters(
    const YAML::Node& root, const std::map<std::string, std::string>& overrides,
    const RecipeReader& reader) {
  std::map<std::string, std::string> parameters;
  if (const auto node = root["parameters"]) {
    if (!node.IsMap()) reader.fail("recipe.invalid", "parameters must be a mapping");
    for (const auto& entry : node)
      parameters[entry.first.as<std::string>()] = entry.second.as<std::string>();
  }
  for (const auto& [name, value] : overrides) {
    if (!parameters.contains(name))
      reader.fail("recipe.unknown_parameter",
                  fmt::format("--param {}: the recipe declares no such parameter", name));
    parameters[name] = value;
  }
  return parameters;
}

}  // namespace

std::optional<RecipeAction> parse_recipe_action(std::string_view text) {
  for (const auto& [action, name] : kActionNames)
    if (text == name) return action;
  return std::nullopt;
}

const char* recipe_action_name(RecipeAction action) {
  return kActionNames[static_cast<std::size_t>(action)].second;
}

bool is_quantizing(RecipeAction action) {
  return is_nvfp4(action) || is_integer(action) || action == RecipeAction::Fp8Block ||
         action == RecipeAction::Vq;
}

bool is_nvfp4(RecipeAction action) {
  return action == RecipeAction::Nvfp4 || action == RecipeAction::Nvfp4Gptq;
}

bool needs_statistics(RecipeAction action, std::string_view scale_method, const VqOptions* vq) {
  if (action == RecipeAction::Vq) return vq == nullptr || needs_statistics(*vq);
  return action == RecipeAction::Gptq || action == RecipeAction::Nvfp4Gptq ||
         (action == RecipeAction::Nvfp4 && scale_method == "hessian");
}

bool needs_statistics(const VqOptions& vq) {
  return vq.compensation == VqCompensation::Gptq || vq.allocated();
}

bool is_integer(RecipeAction action) {
  return action == RecipeAction::Int || action == RecipeAction::Gptq;
}

std::optional<std::pair<RecipeAction, IntegerOptions>> parse_integer_preset(std::string_view text) {
  for (const auto& preset : kIntegerPresets)
    if (text == preset.name) {
      IntegerOptions options;
      options.bits = preset.bits;
      options.symmetric = preset.symmetric;
      options.group_size = preset.group_size;
      return std::pair{preset.action, options};
    }
  return std::nullopt;
}

LayerSelector LayerSelector::parse(std::string_view text) {
  LayerSelector selector;
  selector.text_ = std::string(text);
  auto fail = [&](std::string_view term) {
    throw_bad_input("recipe.invalid_layers",
                    fmt::format("cannot read layer selector term '{}' in '{}' (examples: 7, "
                                "3-77, first 2, last 2, mtp, all; numbers at most {})",
                                term, text, std::numeric_limits<std::uint32_t>::max()));
  };
  std::size_t position = 0;
  while (position <= text.size()) {
    auto comma = text.find(',', position);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string term = trim(text.substr(position, comma - position));
    position = comma + 1;
    Term parsed{};
    if (term == "mtp") {
      parsed.kind = Term::Kind::Mtp;
    } else if (term == "all") {
      parsed.kind = Term::Kind::All;
    } else if (term.starts_with("first ") || term.starts_with("last ")) {
      const bool first = term.starts_with("first ");
      auto count = parse_index(trim(std::string_view(term).substr(first ? 6 : 5)));
      if (!count) fail(term);
      parsed.kind = first ? Term::Kind::First : Term::Kind::Last;
      parsed.low = *count;
    } else if (const auto dash = term.find('-'); dash != std::string::npos) {
      auto low = parse_index(trim(std::string_view(term).substr(0, dash)));
      auto high = parse_index(trim(std::string_view(term).substr(dash + 1)));
      if (!low || !high || *low > *high) fail(term);
      parsed = {Term::Kind::Range, *low, *high};
    } else {
      auto layer = parse_index(term);
      if (!layer) fail(term);
      parsed = {Term::Kind::Range, *layer, *layer};
    }
    selector.terms_.push_back(parsed);
  }
  return selector;
}

bool LayerSelector::matches(std::uint32_t layer, const ModelLayout& layout) const {
  const std::uint32_t main_layers = layout.num_hidden_layers;
  for (const Term& term : terms_) {
    switch (term.kind) {
      case Term::Kind::Range:
        if (layer >= term.low && layer <= term.high) return true;
        break;
      case Term::Kind::First:
        if (layer < main_layers && layer < term.low) return true;
        break;
      case Term::Kind::Last:
        // Not layer + count >= main_layers: that wraps around for counts near 2^32.
        if (layer < main_layers && term.low >= main_layers - layer) return true;
        break;
      case Term::Kind::Mtp:
        if (layout.is_mtp_layer(layer)) return true;
        break;
      case Term::Kind::All:
        return true;
    }
  }
  return false;
}

bool RecipeRule::matches(const ParsedTensorName& tensor, const ModelLayout& layout) const {
  if (!categories.empty() &&
      std::find(categories.begin(), categories.end(), category(tensor.role)) == categories.end())
    return false;
  if (!roles.empty() && std::find(roles.begin(), roles.end(), tensor.role) == roles.end())
    return false;
  if (!modules.empty() &&
      std::none_of(modules.begin(), modules.end(), [&](const NamePattern& pattern) {
        return pattern.matches_module(tensor.module_path);
      }))
    return false;
  if (layers && (!tensor.layer || !layers->matches(*tensor.layer, layout))) return false;
  if (mtp && (tensor.layer && layout.is_mtp_layer(*tensor.layer)) != *mtp) return false;
  return true;
}

Recipe parse_recipe(std::string_view yaml_text, const std::string& source,
                    const std::map<std::string, std::string>& parameter_overrides) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::DeepRecursion& error) {
    // yaml-cpp's own message is "bad file".
    throw_bad_input("recipe.invalid_yaml",
                    fmt::format("YAML nested deeper than {} levels", error.depth() - 1), source);
  } catch (const YAML::Exception& error) {
    throw_bad_input("recipe.invalid_yaml", error.what(), source);
  }
  RecipeReader bootstrap(source, {});
  if (!root.IsMap()) bootstrap.fail("recipe.invalid", "a recipe is a YAML mapping");
  Recipe recipe;
  recipe.source = source;
  // Everything that reads nodes is inside: a node of another type than expected (a mapping
  // as a parameter's value or as a key) makes yaml-cpp throw BadConversion.
  try {
    bootstrap.check_keys(root, kRecipeKeys, "the recipe");
    RecipeReader reader(source, read_parameters(root, parameter_overrides, bootstrap));
    if (root["description"]) recipe.description = root["description"].as<std::string>();
    if (const auto format = root["format"]) {
      const auto text = reader.scalar(format, "format");
      auto parsed = parse_output_format(text);
      if (!parsed)
        reader.fail("recipe.unknown_format",
                    fmt::format("no format '{}' (modelopt, compressed-tensors)", text));
      recipe.format = *parsed;
    }
    if (const auto size = root["max_shard_size"])
      recipe.max_shard_bytes = parse_byte_size(reader.scalar(size, "max_shard_size"));
    if (const auto kv_cache = root["kv_cache"]) {
      const auto text = reader.scalar(kv_cache, "kv_cache");
      if (text != "fp8" && text != "none")
        reader.fail("recipe.invalid", "kv_cache must be fp8 or none");
      if (text == "fp8") recipe.kv_cache = "FP8";
    }
    if (const auto activations = root["activations"]) {
      const auto text = reader.scalar(activations, "activations");
      if (text != "nvfp4" && text != "none")
        reader.fail("recipe.invalid", "activations must be nvfp4 (W4A4) or none (W4A16)");
      recipe.quantize_activations = text == "nvfp4";
    }
    if (const auto snr = root["min_snr_db"])
      recipe.min_snr_db = read_number<double>(snr, "min_snr_db", -1000.0, 1000.0, reader);
    if (const auto defaults = root["defaults"]) {
      reader.check_keys(defaults, kDefaultKeys, "defaults");
      if (defaults["scale_method"])
        recipe.scale_method = reader.scalar(defaults["scale_method"], "scale_method");
    }
    recipe.vq_tiers = read_vq_tiers(root["vq_tiers"], reader);
    const auto rules = root["rules"];
    if (!rules || !rules.IsSequence() || rules.size() == 0)
      reader.fail("recipe.no_rules", "a recipe needs a non-empty list of rules");
    for (std::size_t i = 0; i < rules.size(); ++i)
      recipe.rules.push_back(read_rule(rules[i], i, reader, recipe.vq_tiers));
  } catch (const YAML::Exception& error) {
    throw_bad_input("recipe.invalid_yaml", error.what(), source);
  }
  return recipe;
}

Recipe load_recipe(const std::filesystem::path& path,
                   const std::map<std::string, std::string>& parameter_overrides) {
  return parse_recipe(read_text_file(path), path.string(), parameter_overrides);
}

}  // namespace qs
