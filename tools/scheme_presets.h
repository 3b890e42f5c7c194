#pragma once
// The --scheme presets as recipe text, and --param parsing, shared by the subcommands that
// quantize (quantize, mtp extract --requant).

#include <map>
#include <string>
#include <vector>

#include "qs/ckpt/plan/recipe.h"

namespace qs::cli {

// nvfp4, int8, int8-channel, int4, int4-g32, gptq-int4, gptq-int8, fp8-block, and bf16 (FP8
// block-scaled sources decoded to BF16, nothing quantized).
const std::vector<std::string>& scheme_names();

// Every Linear of a full model in `scheme` except lm_head, routers, the indexer and the MTP
// layers. Throws BadInput "cli.unknown_scheme" for a name not in scheme_names().
std::string scheme_recipe_text(const std::string& scheme);

// Every Linear of an MTP draft in `scheme` except the router, the indexer and the MTP-only
// projections (vLLM builds eh_proj and the shared head unquantized).
std::string draft_scheme_recipe_text(const std::string& scheme);

// --param NAME=VALUE, repeated. Throws BadInput "cli.bad_param".
std::map<std::string, std::string> parse_parameters(const std::vector<std::string>& texts);

}  // namespace qs::cli
