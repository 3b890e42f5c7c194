#include "qs/ckpt/core/json_input.h"

#include <fmt/format.h>

#include "qs/ckpt/core/error.h"

namespace qs {

namespace {

// The byte offset at which arrays and objects first nest deeper than kMaxJsonNesting, or
// npos when they never do.
std::size_t too_deep_at(std::string_view text) {
  std::size_t depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonNesting) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string_view::npos;
}

}  // namespace

void check_json_nesting(std::string_view text, const std::string& kind, const std::string& file) {
  const std::size_t at = too_deep_at(text);
  if (at != std::string_view::npos)
    throw_bad_input(kind,
                    fmt::format("not valid JSON: arrays and objects nest deeper than {} levels "
                                "(at byte {})",
                                kMaxJsonNesting, at),
                    file);
}

nlohmann::json parse_json_or_discarded(std::string_view text) {
  if (too_deep_at(text) != std::string_view::npos) return nlohmann::json::value_t::discarded;
  return nlohmann::json::parse(text, nullptr, false);
}

nlohmann::json parse_json_input(std::string_view text, const std::string& kind,
                                const std::string& file) {
  check_json_nesting(text, kind, file);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    // parse_error for syntax and UTF-8, out_of_range for numbers beyond a double (1e999).
    throw_bad_input(kind, fmt::format("not valid JSON ({})", error.what()), file);
  }
}

}  // namespace qs
