#pragma once
// Sizes as users write them on command lines and in recipes.

#include <cstdint>
#include <string_view>

namespace qs {

// "5GB", "500MB", "1.5GiB", "1048576" (bytes) → bytes. Decimal units mean what
// huggingface_hub's max_shard_size means ("5GB" = 5·10⁹); binary ones need the "i".
// Throws BadInput "size.invalid" naming the text.
std::uint64_t parse_byte_size(std::string_view text);

}  // namespace qs
