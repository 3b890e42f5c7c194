#pragma once
// What every subcommand shares: how it registers with the CLI and how it reports.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>

namespace qs::cli {

// Exit codes, the same for every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitProblems = 1;  // ran, found problems (validate) or failed internally
inline constexpr int kExitBadInput = 2;  // unreadable input or bad usage

// A subcommand adds itself to the app and returns what runs when it was chosen.
using SubcommandRunner = std::function<int()>;
using SubcommandRegistration = SubcommandRunner (*)(CLI::App& app);

// --device for the runner's commands: cpu, cuda, or auto (cuda when a device is usable).
// Returns true for CUDA; throws BadInput "cli.bad_device" / "cuda.unavailable".
bool runner_uses_cuda(const std::string& device);

// "1.50 GiB" style sizes for humans; --json output uses plain byte counts.
std::string human_bytes(std::uint64_t bytes);

}  // namespace qs::cli
