#pragma once
// What the suites that break our own quantized output share: the bundled model quantized once
// per suite, numbered broken copies of it, and finding a line of `validate`'s text report.

#include <filesystem>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "test_support.h"

namespace qs::testing {

// Outputs of `quantize` on the bundled model in one scratch directory, each under a name.
// A suite makes one in SetUpTestSuite, so the quantizing is paid once, not per test.
class QuantizedOutputs {
 public:
  explicit QuantizedOutputs(const std::string& label) : scratch_(label) {}

  // Quantizes the bundled model into `name` with `arguments` ("--scheme int4", "--recipe ...");
  // a failing quantize is a fatal test failure.
  void quantize(const std::string& name, const std::string& arguments);
  // `quantize(scheme, "--scheme " + scheme)` for each scheme.
  void quantize_schemes(std::initializer_list<const char*> schemes);

  std::filesystem::path path(const std::string& name) const { return scratch_.path() / name; }
  // The scratch directory, for other files a suite writes next to the outputs.
  const std::filesystem::path& directory() const { return scratch_.path(); }

  // A copy of output `name` with `edit` applied to each tensor and `edit_config` run on its
  // config.json; returns its path. Numbered, not named after what is broken: the path appears
  // in the output the tests search.
  std::filesystem::path broken_copy(const std::string& name, const TensorEdit& edit,
                                    const std::function<void(nlohmann::json&)>& edit_config = {});

 private:
  ScratchDirectory scratch_;
  int copies_ = 0;
};

// Leaves a tensor as it is (for a copy broken in its config only).
inline const TensorEdit kUnchanged = [](EditableTensor&) { return true; };

// Makes `tensor` one of zero elements (shape {0}, no bytes); leaves the others as they are.
inline TensorEdit emptied(const std::string& tensor) {
  return [tensor](EditableTensor& edited) {
    if (edited.spec.name == tensor) {
      edited.spec.shape = {0};
      edited.bytes.clear();
    }
    return true;
  };
}

// Whether `output` (validate's text report, "severity kind  tensor: message" per finding) has a
// line with `kind` naming `tensor`.
bool has_finding(const std::string& output, const std::string& kind, const std::string& tensor);

}  // namespace qs::testing
