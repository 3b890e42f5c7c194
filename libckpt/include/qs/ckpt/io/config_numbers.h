#pragma once
// The architecture numbers of config.json that quantsmith sizes loops and buffers by, with the
// type and range each must have. Checked once when a checkpoint's config.json is read, so
// nothing downstream loops 10^12 times over a layer count or reads "64" as a size.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

namespace qs {

struct ConfigNumberRange {
  std::string_view key;
  std::uint64_t min;
  std::uint64_t max;
};

// One row per key (see the README's table). Every present, non-null key must be an integer
// (a JSON number without fraction or exponent) in [min, max]; for eos_token_id also an array
// of such integers.
std::span<const ConfigNumberRange> config_number_ranges();

// Throws BadInput "config.invalid_value" naming `file` and the key for the first number of
// the table that is of the wrong type or out of range. Absent and null keys are left to the
// readers that need them.
void check_config_numbers(const nlohmann::json& config, const std::string& file);

}  // namespace qs
