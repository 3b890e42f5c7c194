#pragma once
// JSON that comes from the user's files (config.json, index, generation and quantization
// configs, calibration indexes, job files, safetensors headers). Whatever the bytes, reading
// it either succeeds or throws BadInput naming the file: a syntax error, invalid UTF-8, a
// number beyond a double and nesting deeper than kMaxJsonNesting are all bad input (exit 2).
// The nesting cap is checked by a linear pre-scan before nlohmann's parser (and any recursive
// walk of its result) ever sees the text, so a file of a million '[' is refused at once
// instead of exhausting the stack.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qs {

// Real configs nest fewer than ten levels; this leaves room for anything a tool might write.
inline constexpr std::size_t kMaxJsonNesting = 256;

// Throws BadInput `kind` naming `file` when arrays and objects nest deeper than
// kMaxJsonNesting (brackets inside strings do not count). Does not check the syntax.
void check_json_nesting(std::string_view text, const std::string& kind, const std::string& file);

// check_json_nesting, then nlohmann's parser; any parse failure becomes BadInput `kind`
// ("not valid JSON (...)") naming `file`.
nlohmann::json parse_json_input(std::string_view text, const std::string& kind,
                                const std::string& file);

// For readers that report unreadable JSON as a finding rather than an error: the parsed
// value, or a discarded value (is_discarded()) for invalid or too deeply nested text.
nlohmann::json parse_json_or_discarded(std::string_view text);

}  // namespace qs
