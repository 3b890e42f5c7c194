#include "quantized_outputs.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "qs/ckpt/io/file_io.h"

namespace qs::testing {

void QuantizedOutputs::quantize(const std::string& name, const std::string& arguments) {
  const std::filesystem::path bundled = bundled_model();
  auto result = run_cli("quantize " + quoted(bundled) + " " + quoted(path(name)) + " " + arguments);
  ASSERT_EQ(result.exit_code, 0) << name << "\n" << result.output;
}

void QuantizedOutputs::quantize_schemes(std::initializer_list<const char*> schemes) {
  for (const char* scheme : schemes) quantize(scheme, std::string("--scheme ") + scheme);
}

std::filesystem::path QuantizedOutputs::broken_copy(
    const std::string& name, const TensorEdit& edit,
    const std::function<void(nlohmann::json&)>& edit_config) {
  const auto broken = scratch_.path() / ("broken-" + std::to_string(++copies_));
  rewrite_checkpoint(path(name), broken, edit);
  if (edit_config) {
    auto config = nlohmann::json::parse(read_text_file(broken / "config.json"));
    edit_config(config);
    write_file_atomically(broken / "config.json", config.dump(2));
  }
  return broken;
}

bool has_finding(const std::string& output, const std::string& kind, const std::string& tensor) {
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);)
    if (line.find(" " + kind + " ") != std::string::npos &&
        line.find(" " + tensor + ":") != std::string::npos)
      return true;
  return false;
}

}  // namespace qs::testing
