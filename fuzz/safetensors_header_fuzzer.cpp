// Feeds arbitrary bytes to the safetensors header parser as if they were a whole file. The
// parser must either accept or throw qs::Error; anything else (crash, sanitizer report, other
// exception) is a finding. Accepted headers must also survive a write/parse round trip.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto bytes = std::as_bytes(std::span(data, size));
  qs::SafetensorsHeader header;
  try {
    header = qs::parse_safetensors_header(bytes, size, "fuzz-input");
  } catch (const qs::Error&) {
    return 0;
  }
  std::vector<qs::TensorSpec> specs;
  for (const auto& tensor : header.tensors)
    specs.push_back({tensor.name, tensor.dtype, tensor.shape});
  std::string rebuilt;
  try {
    rebuilt = qs::build_safetensors_header(specs, header.metadata);
  } catch (const qs::Error&) {
    return 0;  // e.g. the compact header would exceed the size limit
  }
  rebuilt.append(header.data_size(), '\0');
  auto again = qs::parse_safetensors_header(
      std::as_bytes(std::span(rebuilt.data(), rebuilt.size())), rebuilt.size(), "rebuilt");
  if (again.tensors.size() != header.tensors.size()) std::abort();
  for (std::size_t i = 0; i < header.tensors.size(); ++i)
    if (again.tensors[i].name != header.tensors[i].name ||
        again.tensors[i].byte_size() != header.tensors[i].byte_size())
      std::abort();
  return 0;
}
