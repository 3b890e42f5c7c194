#include "qs/ckpt/model/name_pattern.h"

#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <cctype>

#include "qs/ckpt/core/error.h"

namespace qs {
namespace {

constexpr std::string_view kRegexPrefix = "re:";

// ---- Syntax Python's re and RE2 do not read alike ----

// Patterns come from recipes and from checkpoints' configs that Python's `re` (vLLM,
// compressed-tensors) also reads, so we accept only the syntax both engines read with one
// meaning. Rejected: constructs RE2 lacks (lookbehind, comments, conditionals, \Z; it would
// only say "invalid"), constructs with another meaning or none in Python (\C, \Q, \p; the
// inline flag U is "ungreedy" in RE2 and an error in Python), and the named groups, \A and
// inline flags both understand, which configs have never needed and which the rule
// "one meaning everywhere" keeps simple to state.
struct PythonOnlySyntax {
  std::string_view sequence;  // as it appears right after '\' or '(?'
  bool after_group_open;      // true: follows "(?", false: follows '\'
  const char* meaning;
};

constexpr std::array kPythonOnlySyntax{
    PythonOnlySyntax{"A", false, "\\A (start of string; write ^)"},
    PythonOnlySyntax{"Z", false, "\\Z (end of string; write $)"},
    PythonOnlySyntax{"z", false, "\\z (end of string; write $)"},
    PythonOnlySyntax{"C", false, "\\C (RE2's any byte)"},
    PythonOnlySyntax{"Q", false, "\\Q...\\E (RE2's literal text)"},
    PythonOnlySyntax{"p", false, "\\p (RE2's Unicode classes)"},
    PythonOnlySyntax{"P", false, "\\P (RE2's Unicode classes)"},
    PythonOnlySyntax{"P", true, "(?P...) named groups"},
    PythonOnlySyntax{"<=", true, "(?<=...) lookbehind"},
    PythonOnlySyntax{"<!", true, "(?<!...) lookbehind"},
    PythonOnlySyntax{"#", true, "(?#...) comments"},
    PythonOnlySyntax{"(", true, "(?(...)...) conditionals"},
    PythonOnlySyntax{"a", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"i", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"L", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"m", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"s", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"u", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"x", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"U", true, "inline flags such as (?i)"},
    PythonOnlySyntax{"-", true, "inline flags such as (?-i:...)"},
};

const char* python_only_syntax(std::string_view regex, bool after_group_open, std::size_t at) {
  for (const PythonOnlySyntax& syntax : kPythonOnlySyntax) {
    if (syntax.after_group_open == after_group_open &&
        regex.substr(at, syntax.sequence.size()) == syntax.sequence) {
      return syntax.meaning;
    }
  }
  return nullptr;
}

// Scans outside bracket expressions (where '(' and '\A' are ordinary) for the table above.
const char* find_python_only_syntax(std::string_view regex) {
  bool in_brackets = false;
  for (std::size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\') {
      if (!in_brackets && i + 1 < regex.size()) {
        if (const char* meaning = python_only_syntax(regex, false, i + 1)) return meaning;
      }
      ++i;  // the escaped character is never special
    } else if (in_brackets) {
      if (c == ']') in_brackets = false;
    } else if (c == '[') {
      in_brackets = true;
      // A ']' right after '[' or '[^' is a member, not the end.
      if (i + 1 < regex.size() && regex[i + 1] == '^') ++i;
      if (i + 1 < regex.size() && regex[i + 1] == ']') ++i;
    } else if (c == '(' && i + 1 < regex.size() && regex[i + 1] == '?') {
      if (const char* meaning = python_only_syntax(regex, true, i + 2)) return meaning;
    }
  }
  return nullptr;
}

// ---- Globs (Python fnmatch.fnmatchcase) ----

// Matches `c` against the bracket expression starting at glob[start] == '['. Sets `end` to
// the index after its closing ']'; returns false with end == npos when there is none.
bool bracket_matches(std::string_view glob, std::size_t start, char c, std::size_t& end) {
  std::size_t i = start + 1;
  const bool negated = i < glob.size() && glob[i] == '!';
  if (negated) ++i;
  bool matched = false;
  bool first = true;
  while (i < glob.size() && (glob[i] != ']' || first)) {
    first = false;
    const char low = glob[i];
    if (i + 2 < glob.size() && glob[i + 1] == '-' && glob[i + 2] != ']') {
      const char high = glob[i + 2];
      if (low <= c && c <= high) matched = true;
      i += 3;
    } else {
      if (low == c) matched = true;
      ++i;
    }
  }
  if (i >= glob.size()) {
    end = std::string_view::npos;
    return false;
  }
  end = i + 1;
  return matched != negated;
}

// Iterative wildcard matching: remember the last '*' and retry from one character further
// on mismatch. Linear in practice, no recursion, no regex.
bool glob_matches(std::string_view glob, std::string_view name) {
  std::size_t g = 0;
  std::size_t n = 0;
  std::size_t star_glob = std::string_view::npos;
  std::size_t star_name = 0;
  while (n < name.size()) {
    if (g < glob.size()) {
      const char p = glob[g];
      if (p == '*') {
        star_glob = ++g;
        star_name = n;
        continue;
      }
      if (p == '?') {
        ++g;
        ++n;
        continue;
      }
      if (p == '[') {
        std::size_t end = 0;
        if (bracket_matches(glob, g, name[n], end)) {
          g = end;
          ++n;
          continue;
        }
      } else if (p == name[n]) {
        ++g;
        ++n;
        continue;
      }
    }
    if (star_glob == std::string_view::npos) return false;
    g = star_glob;
    n = ++star_name;
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

void check_brackets_closed(std::string_view glob) {
  for (std::size_t i = 0; i < glob.size(); ++i) {
    if (glob[i] != '[') continue;
    std::size_t end = 0;
    bracket_matches(glob, i, '\0', end);
    if (end == std::string_view::npos) {
      throw_bad_input("pattern.invalid_glob",
                      "glob pattern '" + std::string(glob) + "' has an unterminated '['");
    }
    i = end - 1;
  }
}

std::string_view module_path_of(std::string_view tensor_name) {
  const std::size_t dot = tensor_name.rfind('.');
  return dot == std::string_view::npos ? tensor_name : tensor_name.substr(0, dot);
}

std::string lowercase(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower;
}

std::string_view last_component(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

// ---- Checkpoint module -> vLLM module ----

enum class VllmNaming : std::uint8_t {
  Own,            // the module keeps its checkpoint path
  Sibling,        // the fused sibling `component` (fused_qkv_a_proj, gate_up_proj)
  ExpertsPrefix,  // the FusedMoE holding every expert: drop "{expert}.{proj}"
};

struct VllmModuleRule {
  TensorRole role;
  VllmNaming naming;
  std::string_view component;
  std::string_view class_name;
};

// vllm models/deepseek_v2.py (DeepseekV2MLAAttention, Indexer, DeepseekV2MLP, DeepseekV2MoE)
// and deepseek_mtp.py (SharedHead). Modules built with quant_config=None — the router gate,
// the fused indexer wk_weights_proj, the plain nn.Linear eh_proj — are absent on purpose.
constexpr std::array kVllmModuleRules{
    VllmModuleRule{TensorRole::AttnQA, VllmNaming::Sibling, "fused_qkv_a_proj",
                   "DeepSeekV2FusedQkvAProjLinear"},
    VllmModuleRule{TensorRole::AttnKvA, VllmNaming::Sibling, "fused_qkv_a_proj",
                   "DeepSeekV2FusedQkvAProjLinear"},
    VllmModuleRule{TensorRole::AttnQB, VllmNaming::Own, {}, "ColumnParallelLinear"},
    VllmModuleRule{TensorRole::AttnKvB, VllmNaming::Own, {}, "ColumnParallelLinear"},
    VllmModuleRule{TensorRole::AttnO, VllmNaming::Own, {}, "RowParallelLinear"},
    // vllm models/qwen3_moe.py (Qwen3MoeAttention): q/k/v load into one qkv_proj.
    VllmModuleRule{TensorRole::AttnQ, VllmNaming::Sibling, "qkv_proj", "QKVParallelLinear"},
    VllmModuleRule{TensorRole::AttnK, VllmNaming::Sibling, "qkv_proj", "QKVParallelLinear"},
    VllmModuleRule{TensorRole::AttnV, VllmNaming::Sibling, "qkv_proj", "QKVParallelLinear"},
    VllmModuleRule{TensorRole::IndexerWqB, VllmNaming::Own, {}, "ReplicatedLinear"},
    VllmModuleRule{TensorRole::DenseGate, VllmNaming::Sibling, "gate_up_proj",
                   "MergedColumnParallelLinear"},
    VllmModuleRule{TensorRole::DenseUp, VllmNaming::Sibling, "gate_up_proj",
                   "MergedColumnParallelLinear"},
    VllmModuleRule{TensorRole::DenseDown, VllmNaming::Own, {}, "RowParallelLinear"},
    VllmModuleRule{TensorRole::SharedGate, VllmNaming::Sibling, "gate_up_proj",
                   "MergedColumnParallelLinear"},
    VllmModuleRule{TensorRole::SharedUp, VllmNaming::Sibling, "gate_up_proj",
                   "MergedColumnParallelLinear"},
    VllmModuleRule{TensorRole::SharedDown, VllmNaming::Own, {}, "RowParallelLinear"},
    VllmModuleRule{TensorRole::ExpertGate, VllmNaming::ExpertsPrefix, {}, "FusedMoE"},
    VllmModuleRule{TensorRole::ExpertUp, VllmNaming::ExpertsPrefix, {}, "FusedMoE"},
    VllmModuleRule{TensorRole::ExpertDown, VllmNaming::ExpertsPrefix, {}, "FusedMoE"},
    VllmModuleRule{TensorRole::LmHead, VllmNaming::Own, {}, "ParallelLMHead"},
    VllmModuleRule{TensorRole::MtpSharedHeadLmHead, VllmNaming::Own, {}, "ParallelLMHead"},
};

std::string parent_of(std::string_view path) {
  const std::size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? std::string{} : std::string(path.substr(0, dot));
}

}  // namespace

// ---- NamePattern ----

NamePattern NamePattern::parse(std::string_view text, PlainPatternMeaning plain) {
  if (text.starts_with(kRegexPrefix)) {
    NamePattern pattern(std::string(text), Kind::Regex);
    const std::string_view regex = text.substr(kRegexPrefix.size());
    if (const char* meaning = find_python_only_syntax(regex)) {
      throw_bad_input("pattern.python_only_regex", "regex pattern '" + std::string(text) +
                                                       "' uses " + meaning +
                                                       ", which only Python's re understands");
    }
    RE2::Options options;
    options.set_log_errors(false);  // libraries never print; the error below says why
    auto compiled =
        std::make_shared<const RE2>(re2::StringPiece(regex.data(), regex.size()), options);
    if (!compiled->ok()) {
      throw_bad_input("pattern.invalid_regex", "regex pattern '" + std::string(text) +
                                                   "' does not compile: " + compiled->error());
    }
    pattern.regex_ = std::move(compiled);
    return pattern;
  }
  const bool has_wildcards = text.find_first_of("*?[") != std::string_view::npos;
  if (plain == PlainPatternMeaning::Glob && has_wildcards) {
    check_brackets_closed(text);
    return NamePattern(std::string(text), Kind::Glob);
  }
  return NamePattern(std::string(text), Kind::Exact);
}

bool NamePattern::matches_module(std::string_view module_name) const {
  switch (kind_) {
    case Kind::Exact:
      return module_name == text_;
    case Kind::Glob:
      return glob_matches(text_, module_name);
    case Kind::Regex:
      // re.match: the match must start at the first character and may end anywhere.
      return regex_->Match(re2::StringPiece(module_name.data(), module_name.size()), 0,
                           module_name.size(), RE2::ANCHOR_START, nullptr, 0);
  }
  return false;
}

bool NamePattern::matches_tensor(std::string_view tensor_name) const {
  return matches_module(module_path_of(tensor_name));
}

// ---- vLLM modules ----

std::vector<PackedModule> deepseek_packed_modules() {
  return {
      {"fused_qkv_a_proj", {"q_a_proj", "kv_a_proj_with_mqa"}},
      {"gate_up_proj", {"gate_proj", "up_proj"}},
      {"qkv_proj", {"q_proj", "k_proj", "v_proj"}},
  };
}

std::optional<VllmModule> vllm_quantized_module(const ParsedTensorName& parsed) {
  for (const VllmModuleRule& rule : kVllmModuleRules) {
    if (rule.role != parsed.role) continue;
    VllmModule module;
    module.class_name = std::string(rule.class_name);
    switch (rule.naming) {
      case VllmNaming::Own:
        module.name = parsed.module_path;
        break;
      case VllmNaming::Sibling:
        module.name = parent_of(parsed.module_path) + "." + std::string(rule.component);
        break;
      case VllmNaming::ExpertsPrefix:
        module.name = parent_of(parent_of(parsed.module_path));
        module.fused_moe = true;
        break;
    }
    return module;
  }
  return std::nullopt;
}

// ---- VllmTargetMatcher ----

VllmTargetMatcher::VllmTargetMatcher(std::span<const std::string> targets,
                                     std::span<const std::string> ignore,
                                     std::vector<PackedModule> packed_modules)
    : packed_modules_(std::move(packed_modules)) {
  for (const std::string& target : targets) {
    targets_.push_back(NamePattern::parse(target, PlainPatternMeaning::ExactName));
    if (target == "Linear" && !linear_target_) linear_target_ = targets_.size() - 1;
    if (target == "FusedMoE") has_fused_moe_target_ = true;
  }
  for (const std::string& entry : ignore) {
    ignore_.push_back(NamePattern::parse(entry, PlainPatternMeaning::ExactName));
    ignore_verbatim_.push_back(entry);
  }
}

bool VllmTargetMatcher::ignore_matches(std::string_view name) const {
  return std::any_of(ignore_.begin(), ignore_.end(),
                     [&](const NamePattern& entry) { return entry.matches_module(name); });
}

std::optional<std::size_t> VllmTargetMatcher::first_name_match(std::string_view name) const {
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    if (targets_[i].matches_module(name)) return i;
  }
  return std::nullopt;
}

std::optional<std::size_t> VllmTargetMatcher::first_class_match(std::string_view class_name,
                                                                bool fused_moe_alias) const {
  const std::string lower_class = lowercase(class_name);
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    const NamePattern& target = targets_[i];
    const bool matched = target.kind() == NamePattern::Kind::Regex
                             ? target.matches_module(class_name)
                             : lower_class.find(lowercase(target.text())) != std::string::npos;
    if (matched) return i;
  }
  // vLLM appends "FusedMoE" -> Linear's scheme after every configured target.
  if (fused_moe_alias && linear_target_ && !has_fused_moe_target_ &&
      lower_class.find("fusedmoe") != std::string::npos) {
    return linear_target_;
  }
  return std::nullopt;
}

const PackedModule* VllmTargetMatcher::packed_for_last_component(
    std::string_view layer_name) const {
  const std::string_view proj = last_component(layer_name);
  for (const PackedModule& packed : packed_modules_) {
    if (packed.fused == proj) return &packed;
  }
  return nullptr;
}

const PackedModule* VllmTargetMatcher::packed_for_suffix(std::string_view layer_name) const {
  for (const PackedModule& packed : packed_modules_) {
    if (layer_name.ends_with(packed.fused)) return &packed;
  }
  return nullptr;
}

IgnoreState VllmTargetMatcher::ignore_state(std::string_view layer_name) const {
  const PackedModule* packed = packed_for_last_component(layer_name);
  const bool listed_verbatim = std::find(ignore_verbatim_.begin(), ignore_verbatim_.end(),
                                         layer_name) != ignore_verbatim_.end();
  if (packed == nullptr || listed_verbatim || packed->shards.empty()) {
    return ignore_matches(layer_name) ? IgnoreState::Ignored : IgnoreState::NotIgnored;
  }
  const std::string_view stem = layer_name.substr(0, layer_name.size() - packed->fused.size());
  const bool first = ignore_matches(std::string(stem) + packed->shards.front());
  for (const std::string& shard : packed->shards) {
    if (ignore_matches(std::string(stem) + shard) != first) return IgnoreState::ShardsDisagree;
  }
  return first ? IgnoreState::Ignored : IgnoreState::NotIgnored;
}

VllmResolution VllmTargetMatcher::resolve_linear_impl(std::string_view layer_name,
                                                      std::string_view class_name,
                                                      bool fused_moe_alias) const {
  VllmResolution resolution;
  switch (ignore_state(layer_name)) {
    case IgnoreState::Ignored:
      resolution.decision = VllmDecision::Ignored;
      return resolution;
    case IgnoreState::ShardsDisagree:
      resolution.decision = VllmDecision::ShardsDisagree;
      return resolution;
    case IgnoreState::NotIgnored:
      break;
  }
  const auto targeted = [&](std::size_t index, TargetMatchStep step) {
    resolution.decision = VllmDecision::Targeted;
    resolution.target = index;
    resolution.step = step;
    return resolution;
  };
  if (const auto index = first_name_match(layer_name)) {
    return targeted(*index, TargetMatchStep::LayerName);
  }
  if (const auto index = first_class_match(class_name, fused_moe_alias)) {
    return targeted(*index, TargetMatchStep::ClassName);
  }
  if (const PackedModule* packed = packed_for_suffix(layer_name)) {
    const std::string stem(layer_name.substr(0, layer_name.size() - packed->fused.size()));
    for (const std::string& shard : packed->shards) {
      resolution.shard_targets.push_back(first_name_match(stem + shard));
    }
    const bool all_matched =
        !resolution.shard_targets.empty() &&
        std::all_of(resolution.shard_targets.begin(), resolution.shard_targets.end(),
                    [](const std::optional<std::size_t>& index) { return index.has_value(); });
    if (all_matched)
      return targeted(*resolution.shard_targets.front(), TargetMatchStep::FusedShards);
  }
  resolution.decision = VllmDecision::Unmatched;
  return resolution;
}

VllmResolution VllmTargetMatcher::resolve_linear(std::string_view layer_name,
                                                 std::string_view class_name) const {
  return resolve_linear_impl(layer_name, class_name, false);
}

VllmResolution VllmTargetMatcher::resolve_fused_moe(std::string_view experts_prefix) const {
  constexpr std::array<std::string_view, 3> kExpertZero{".0.gate_proj", ".0.up_proj",
                                                        ".0.down_proj"};
  VllmResolution combined;
  std::size_t targeted = 0;
  std::size_t ignored = 0;
  for (std::string_view projection : kExpertZero) {
    const VllmResolution shard = resolve_linear_impl(
        std::string(experts_prefix) + std::string(projection), "FusedMoE", true);
    combined.shard_targets.push_back(shard.target);
    if (shard.decision == VllmDecision::Targeted) {
      ++targeted;
      // vLLM keeps the last projection's (down_proj's) scheme.
      combined.target = shard.target;
      combined.step = shard.step;
    }
    if (shard.decision == VllmDecision::Ignored) ++ignored;
  }
  if (targeted == kExpertZero.size()) {
    combined.decision = VllmDecision::Targeted;
  } else if (targeted > 0) {
    combined.decision = VllmDecision::ShardsDisagree;
  } else {
    combined.decision =
        ignored == kExpertZero.size() ? VllmDecision::Ignored : VllmDecision::Unmatched;
  }
  if (combined.decision != VllmDecision::Targeted) {
    combined.target.reset();
    combined.step.reset();
  }
  return combined;
}

VllmResolution VllmTargetMatcher::resolve(const VllmModule& module) const {
  return module.fused_moe ? resolve_fused_moe(module.name)
                          : resolve_linear(module.name, module.class_name);
}

const char* vllm_decision_name(VllmDecision decision) {
  constexpr std::array kNames{
      std::pair{VllmDecision::Targeted, "targeted"},
      std::pair{VllmDecision::Ignored, "ignored"},
      std::pair{VllmDecision::Unmatched, "unmatched"},
      std::pair{VllmDecision::ShardsDisagree, "shards_disagree"},
  };
  for (const auto& [value, name] : kNames) {
    if (value == decision) return name;
  }
  return "unknown";
}

}  // namespace qs
