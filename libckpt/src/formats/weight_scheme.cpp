#include "qs/ckpt/formats/weight_scheme.h"

#include <fmt/format.h>

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

std::optional<OutputFormat> parse_output_format(std::string_view text) {
  for (const auto& [format, name] : kFormatNames)
    if (text == name) return format;
  return std::nullopt;
}

const char* output_format_name(OutputFormat format) {
  return kFormatNames[static_cast<std::size_t>(format)].second;
}

}  // namespace qs
