#include "qs/ckpt/plan/batch_recipe.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <set>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"

namespace qs {
namespace {

constexpr std::array kRecipeKeys{"description", "parameters", "steps"};
constexpr std::array kStepKeys{"name", "run"};

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_character(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

bool is_parameter_name(std::string_view text) {
  return !text.empty() && is_name_start(text.front()) &&
         std::all_of(text.begin(), text.end(), is_name_character);
}

bool is_step_number(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Errors name the recipe file and, inside steps, the step.
class BatchRecipeReader {
 public:
  explicit BatchRecipeReader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& kind, const std::string& message) const {
    throw_bad_input(kind, context_.empty() ? message : context_ + ": " + message, source_);
  }
  void set_context(std::string context) { context_ = std::move(context); }

  void check_keys(const YAML::Node& map, const auto& allowed, std::string_view where) const {
    if (!map.IsMap()) fail("batch_recipe.invalid", fmt::format("{} must be a mapping", where));
    for (const auto& entry : map) {
      const auto key = entry.first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        fail("batch_recipe.unknown_key", fmt::format("unknown key '{}' in {} (allowed: {})", key,
                                                     where, fmt::join(allowed, ", ")));
    }
  }

  std::string scalar(const YAML::Node& node, std::string_view what) const {
    if (!node.IsScalar()) fail("batch_recipe.invalid", fmt::format("{} must be a string", what));
    return node.Scalar();
  }

  // Library errors raised while reading a step gain the step as context.
  template <typename Action>
  auto in_context(Action&& action) const {
    try {
      return action();
    } catch (const Error& error) {
      if (context_.empty() || error.file() == source_) throw;
      fail(error.kind(), error.detail());
    }
  }

 private:
  std::string source_;
  std::string context_;
};

std::map<std::string, std::string> read_parameters(
    const YAML::Node& root, const std::filesystem::path& recipe_directory,
    const std::map<std::string, std::string>& overrides, const BatchRecipeReader& reader) {
  std::map<std::string, std::string> parameters;
  std::set<std::string> without_default;
  if (const auto node = root["parameters"]) {
    if (!node.IsMap()) reader.fail("batch_recipe.invalid", "parameters must be a mapping");
    for (const auto& entry : node) {
      const auto name = entry.first.as<std::string>();
      if (!is_parameter_name(name))
        reader.fail("batch_recipe.invalid",
                    fmt::format("parameter name '{}' must be letters, digits and '_'", name));
      if (name == kRecipeDirectoryParameter)
        reader.fail(
            "batch_recipe.invalid",
            fmt::format("'{}' is built in (the recipe's directory); choose another name", name));
      // A parameter declared without a value has no default: the caller must give it.
      if (entry.second.IsNull()) {
        without_default.insert(name);
        parameters[name] = {};
      } else {
        parameters[name] = reader.scalar(entry.second, fmt::format("parameter '{}'", name));
      }
    }
  }
  for (const auto& [name, value] : overrides) {
    if (name == kRecipeDirectoryParameter)
      reader.fail("batch_recipe.unknown_parameter",
                  fmt::format("--param {}: built in (the recipe's directory), not settable", name));
    if (!parameters.contains(name)) {
      std::vector<std::string> declared;
      for (const auto& entry : parameters) declared.push_back(entry.first);
      reader.fail("batch_recipe.unknown_parameter",
                  fmt::format("--param {}: the recipe declares no such parameter{}", name,
                              declared.empty()
                                  ? std::string(" (it declares none)")
                                  : fmt::format(" (it declares: {})", fmt::join(declared, ", "))));
    }
    parameters[name] = value;
    without_default.erase(name);
  }
  if (!without_default.empty())
    reader.fail("batch_recipe.missing_parameter",
                fmt::format("no value for {}: give --param {}=VALUE",
                            fmt::join(without_default, ", "), *without_default.begin()));
  const auto directory = recipe_directory.empty() ? std::filesystem::path(".") : recipe_directory;
  parameters[std::string(kRecipeDirectoryParameter)] = directory.string();
  return parameters;
}

// The words of a step's `run:`, before substitution.
std::vector<std::string> read_run_words(const YAML::Node& run, const BatchRecipeReader& reader) {
  std::vector<std::string> words;
  if (run.IsScalar()) {
    words = reader.in_context([&] { return split_command_words(run.Scalar()); });
  } else if (run.IsSequence()) {
    for (const auto& element : run) {
      if (!element.IsScalar())
        reader.fail("batch_recipe.invalid",
                    "the words of a run: list must be strings (quote a word that starts with "
                    "'{', as in \"{model}\", or YAML reads it as a mapping)");
      words.push_back(element.Scalar());
    }
  } else {
    reader.fail("batch_recipe.invalid", "run: must be a command line or a list of words");
  }
  if (!words.empty() && words.front() == "quantsmith") words.erase(words.begin());
  if (words.empty())
    reader.fail("batch_recipe.empty_command", "run: names no quantsmith subcommand");
  return words;
}

BatchStep read_step(const YAML::Node& node, std::size_t index,
                    const std::map<std::string, std::string>& parameters,
                    BatchRecipeReader& reader) {
  reader.set_context(fmt::format("step {}", index + 1));
  reader.check_keys(node, kStepKeys, "a step");
  BatchStep step;
  step.name =
      node["name"] ? reader.scalar(node["name"], "name") : fmt::format("step {}", index + 1);
  if (step.name.empty()) reader.fail("batch_recipe.invalid", "name must not be empty");
  if (node["name"] && is_step_number(step.name))
    reader.fail("batch_recipe.invalid",
                fmt::format("a step named '{}' would be ambiguous with --from NUMBER", step.name));
  if (node["name"]) reader.set_context(fmt::format("step {} '{}'", index + 1, step.name));
  if (!node["run"]) reader.fail("batch_recipe.empty_command", "a step needs run:");
  for (const auto& word : read_run_words(node["run"], reader))
    step.arguments.push_back(
        reader.in_context([&] { return substitute_parameters(word, parameters); }));
  return step;
}

}  // namespace

std::vector<std::string> split_command_words(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;  // a word has started (so "" is an empty word, not nothing)
  std::size_t i = 0;
  auto unterminated = [&](char quote, std::size_t at) {
    throw_bad_input("batch_recipe.unterminated_quote",
                    fmt::format("unterminated {} quote starting at character {} of: {}",
                                quote == '\'' ? "single" : "double", at + 1, text));
  };
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      ++i;
    } else if (c == '\'') {
      const auto close = text.find('\'', i + 1);
      if (close == std::string_view::npos) unterminated(c, i);
      word.append(text.substr(i + 1, close - i - 1));
      in_word = true;
      i = close + 1;
    } else if (c == '"') {
      const std::size_t open = i++;
      for (;;) {
        if (i >= text.size()) unterminated('"', open);
        const char d = text[i];
        if (d == '"') break;
        // Inside double quotes a backslash only escapes the characters the shell lets it.
        if (d == '\\' && i + 1 < text.size() &&
            std::string_view("\"\\$`").find(text[i + 1]) != std::string_view::npos) {
          word.push_back(text[i + 1]);
          i += 2;
        } else {
          word.push_back(d);
          ++i;
        }
      }
      in_word = true;
      ++i;
    } else if (c == '\\' && i + 1 < text.size()) {
      word.push_back(text[i + 1]);
      in_word = true;
      i += 2;
    } else {
      word.push_back(c);
      in_word = true;
      ++i;
    }
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

std::string substitute_parameters(std::string_view text,
                                  const std::map<std::string, std::string>& parameters) {
  std::string result;
  std::size_t i = 0;
  auto bad_reference = [&](std::string_view what) {
    throw_bad_input("batch_recipe.bad_parameter_reference",
                    fmt::format("{} in '{}' (a reference is {{name}}; write {{{{ or }}}} for a "
                                "literal brace)",
                                what, text));
  };
  while (i < text.size()) {
    const char c = text[i];
    if ((c == '{' || c == '}') && i + 1 < text.size() && text[i + 1] == c) {
      result.push_back(c);
      i += 2;
    } else if (c == '}') {
      bad_reference("a '}' closes no reference");
    } else if (c == '{') {
      const auto close = text.find('}', i + 1);
      if (close == std::string_view::npos) bad_reference("a '{' is never closed");
      const auto name = text.substr(i + 1, close - i - 1);
      if (!is_parameter_name(name)) bad_reference(fmt::format("'{{{}}}' is not a name", name));
      const auto found = parameters.find(std::string(name));
      if (found == parameters.end()) {
        std::vector<std::string> known;
        for (const auto& [known_name, value] : parameters) known.push_back("{" + known_name + "}");
        throw_bad_input(
            "batch_recipe.unknown_parameter",
            fmt::format("'{{{}}}' names no parameter (known: {})", name, fmt::join(known, ", ")));
      }
      result += found->second;
      i = close + 1;
    } else {
      result.push_back(c);
      ++i;
    }
  }
  return result;
}

BatchRecipe parse_batch_recipe(std::string_view yaml_text, const std::string& source,
                               const std::filesystem::path& recipe_directory,
                               const std::map<std::string, std::string>& parameter_overrides) {
  BatchRecipeReader reader(source);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::DeepRecursion& error) {
    // yaml-cpp's own message is "bad file".
    reader.fail("batch_recipe.invalid_yaml",
                fmt::format("YAML nested deeper than {} levels", error.depth() - 1));
  } catch (const YAML::Exception& error) {
    reader.fail("batch_recipe.invalid_yaml", error.what());
  }
  if (!root.IsMap()) reader.fail("batch_recipe.invalid", "a batch recipe is a YAML mapping");
  if (root["rules"] && !root["steps"])
    reader.fail("batch_recipe.per_tensor_recipe",
                "this is a per-tensor recipe (it has rules:), not a batch recipe (steps:); use "
                "it as `quantsmith quantize IN OUT --recipe FILE`");
  BatchRecipe recipe;
  recipe.source = source;
  try {
    reader.check_keys(root, kRecipeKeys, "the batch recipe");
    if (root["description"]) recipe.description = reader.scalar(root["description"], "description");
    recipe.parameters = read_parameters(root, recipe_directory, parameter_overrides, reader);
    const auto steps = root["steps"];
    if (!steps || !steps.IsSequence() || steps.size() == 0)
      reader.fail("batch_recipe.no_steps", "a batch recipe needs a non-empty list of steps");
    std::set<std::string> names;
    for (std::size_t i = 0; i < steps.size(); ++i) {
      auto step = read_step(steps[i], i, recipe.parameters, reader);
      if (!names.insert(step.name).second)
        reader.fail("batch_recipe.duplicate_step",
                    "another step has this name (--from NAME needs names to be unique)");
      recipe.steps.push_back(std::move(step));
    }
  } catch (const YAML::Exception& error) {
    reader.fail("batch_recipe.invalid_yaml", error.what());
  }
  return recipe;
}

BatchRecipe load_batch_recipe(const std::filesystem::path& path,
                              const std::map<std::string, std::string>& parameter_overrides) {
  return parse_batch_recipe(read_text_file(path), path.string(), path.parent_path(),
                            parameter_overrides);
}

std::size_t find_batch_step(const BatchRecipe& recipe, std::string_view selector) {
  if (is_step_number(selector)) {
    std::size_t number = 0;
    std::from_chars(selector.data(), selector.data() + selector.size(), number);
    if (number >= 1 && number <= recipe.steps.size()) return number - 1;
  } else {
    for (std::size_t i = 0; i < recipe.steps.size(); ++i)
      if (recipe.steps[i].name == selector) return i;
  }
  std::vector<std::string> names;
  for (std::size_t i = 0; i < recipe.steps.size(); ++i)
    names.push_back(fmt::format("{} '{}'", i + 1, recipe.steps[i].name));
  throw_bad_input("batch_recipe.unknown_step",
                  fmt::format("no step '{}' (steps: {})", selector, fmt::join(names, ", ")),
                  recipe.source);
}

std::string quote_command_word(std::string_view word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return is_name_character(c) || std::string_view("-./=:,+@%").find(c) != std::string_view::npos;
  });
  if (plain) return std::string(word);
  std::string quoted = "'";
  for (const char c : word) {
    if (c == '\'')
      quoted += "'\\''";
    else
      quoted.push_back(c);
  }
  return quoted + "'";
}

}  // namespace qs
