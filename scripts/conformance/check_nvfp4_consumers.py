#!/usr/bin/env python3
"""Checks a quantsmith NVFP4 checkpoint against the consumers that load it.

compressed-tensors layout: the config block must validate with the library's own pydantic
models, and every NVFP4 module must decompress, with the library's own NVFP4 compressor, to
the values our format semantics give (decoded here independently with torch's float8 type),
and stay close to the BF16 source. Every Linear must be either quantized or ignored.

modelopt layout: the tensor set, dtypes and shapes vLLM allocates, bit-identical global scales
across the pairs engines fuse, hf_quant_config.json and config.json with the keys vLLM
requires, exclusion of every unquantized Linear (vLLM's rules re-implemented below: vllm itself
is far too heavy to install for a check), and dequantized values close to the source.

Usage: check_nvfp4_consumers.py CHECKPOINT --source BF16_CHECKPOINT
Exit 0 when everything conforms, 1 with the list of problems otherwise.
"""

import argparse
import fnmatch
import json
import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
# Relative L2 error an NVFP4 weight may have against its BF16 source (max scales give ~0.1).
MAX_RELATIVE_ERROR = 0.2
# The library dequantizes in BF16 (scale / global scale, then times the code: two BF16
# roundings); ours is exact in f32. So they may differ by up to 2^-8 of a value.
BF16_RELATIVE_STEP = 2.0 ** -8


def load_tensors(directory):
    tensors = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name)
    return tensors


def unpack_codes(packed):
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1).long()


def our_dequantization(packed, block_scales, decode_scale):
    """code · e4m3(scale) · s2, from the format definitions (not from our C++ code)."""
    values = E2M1[unpack_codes(packed)]
    scales = block_scales.float().repeat_interleave(16, dim=1)
    return values * scales * decode_scale


def relative_error(reference, approximation):
    reference = reference.double()
    return float((reference - approximation.double()).norm() / reference.norm())


def linear_modules(tensors, suffixes):
    modules = set()
    for name, tensor in tensors.items():
        for suffix in suffixes:
            if name.endswith(suffix) and tensor.dim() == 2:
                modules.add(name[: -len(suffix)])
    return modules


def is_linear_weight_name(module):
    last = module.rsplit(".", 1)[-1]
    return last.endswith("_proj") or last in {"gate", "lm_head", "wq_b", "wk", "weights_proj",
                                             "kv_a_proj_with_mqa"}


class Report:
    def __init__(self):
        self.problems = []

    def problem(self, text):
        self.problems.append(text)


def check_compressed_tensors(directory, config, source, report):
    from compressed_tensors.quantization import QuantizationConfig

    block = config["quantization_config"]
    parsed = QuantizationConfig.model_validate(block)
    print(f"  QuantizationConfig validates: format={parsed.format}, "
          f"{len(parsed.config_groups)} group(s), {len(parsed.ignore)} ignore entries")
    scheme = next(iter(parsed.config_groups.values()))
    tensors = load_tensors(directory)
    quantized = linear_modules(tensors, [".weight_packed"])
    decompress = library_nvfp4_decompressor(scheme)
    worst_library_gap = 0.0
    errors = []
    for module in sorted(quantized):
        packed = tensors[f"{module}.weight_packed"]
        scales = tensors[f"{module}.weight_scale"]
        global_scale = tensors[f"{module}.weight_global_scale"]
        if packed.dtype != torch.uint8 or scales.dtype != torch.float8_e4m3fn:
            report.problem(f"{module}: dtypes {packed.dtype}, {scales.dtype}")
            continue
        if tuple(global_scale.shape) != (1,) or global_scale.dtype != torch.float32:
            report.problem(f"{module}.weight_global_scale: {global_scale.dtype} "
                           f"{tuple(global_scale.shape)}, expected float32 [1]")
        ours = our_dequantization(packed, scales, 1.0 / global_scale.float())
        library = decompress(packed, scales, global_scale).float()
        gap = float((library - ours).abs().max() / ours.abs().max().clamp_min(1e-30))
        worst_library_gap = max(worst_library_gap, gap)
        if gap > BF16_RELATIVE_STEP:
            report.problem(f"{module}: library decompression differs from the format semantics "
                           f"by {gap:.3g} of the weight's range")
        error = relative_error(source[f"{module}.weight"].float(), ours)
        errors.append(error)
        if error > MAX_RELATIVE_ERROR:
            report.problem(f"{module}: relative error {error:.4f} against the source")
    check_ignore_coverage(tensors, quantized, parsed.ignore, report)
    print(f"  {len(quantized)} NVFP4 modules decompressed by compressed-tensors; "
          f"max |library − ours| / max|w| = {worst_library_gap:.3g}; relative error vs source "
          f"mean {sum(errors) / max(len(errors), 1):.4f}, max {max(errors, default=0):.4f}")


def library_nvfp4_decompressor(scheme):
    """The installed compressed-tensors' own NVFP4 decompression of one module (its API
    changed: per-module state dicts from 0.20, decompress_weight before)."""
    from compressed_tensors.compressors import NVFP4PackedCompressor

    def decompress(packed, scales, global_scale):
        data = {"weight_packed": packed, "weight_scale": scales,
                "weight_global_scale": global_scale}
        if hasattr(NVFP4PackedCompressor, "decompress_weight"):
            return NVFP4PackedCompressor().decompress_weight(
                compressed_data=data, quantization_args=scheme.weights)
        return NVFP4PackedCompressor.decompress(data, scheme)["weight"]

    return decompress


def ct_ignored(module, ignore):
    for entry in ignore:
        if entry.startswith("re:"):
            if re.match(entry[3:], module):
                return True
        elif entry == module:
            return True
    return False


def check_ignore_coverage(tensors, quantized, ignore, report):
    kept = {m for m in linear_modules(tensors, [".weight"]) if is_linear_weight_name(m)}
    for module in sorted(kept):
        if not ct_ignored(module, ignore):
            report.problem(f"{module}: unquantized Linear neither quantized nor in ignore")
    for module in sorted(quantized):
        if ct_ignored(module, ignore):
            report.problem(f"{module}: quantized but matched by ignore")


# vLLM's ModelOptQuantConfigBase.is_layer_excluded, per docs/formats/modelopt-nvfp4.md,
# "exclude_modules matching".
def vllm_modelopt_excluded(prefix, exclude):
    if "experts" in prefix:
        if any(prefix in entry for entry in exclude if "experts" in entry):
            return True
    elif prefix in exclude:
        return True
    if any(entry in prefix for entry in exclude):
        return True
    return any(fnmatch.fnmatch(prefix, entry) for entry in exclude)


FUSED = [(r"(.*)\.q_a_proj$", r"\1.kv_a_proj_with_mqa"), (r"(.*)\.gate_proj$", r"\1.up_proj")]


def check_modelopt(directory, config, source, report):
    block = config["quantization_config"]
    hf = json.loads((Path(directory) / "hf_quant_config.json").read_text())
    quantization = hf.get("quantization", {})
    for key in ("quant_algo", "group_size", "kv_cache_quant_algo", "exclude_modules"):
        if key not in quantization:
            report.problem(f"hf_quant_config.json lacks quantization.{key} (vLLM requires it)")
    if not str(block.get("quant_method", "")).startswith("modelopt"):
        report.problem("config.json quantization_config.quant_method is not modelopt")
    if quantization.get("group_size") != 16:
        report.problem("group_size is not 16")
    exclude = quantization.get("exclude_modules", [])
    tensors = load_tensors(directory)
    quantized = {m for m in linear_modules(tensors, [".weight_scale"])
                 if f"{m}.weight_scale_2" in tensors}
    errors = []
    for module in sorted(quantized):
        weight = tensors[f"{module}.weight"]
        scales = tensors[f"{module}.weight_scale"]
        scale_2 = tensors[f"{module}.weight_scale_2"]
        n, k = source[f"{module}.weight"].shape
        if weight.dtype != torch.uint8 or tuple(weight.shape) != (n, k // 2):
            report.problem(f"{module}.weight: {weight.dtype} {tuple(weight.shape)}, "
                           f"expected uint8 ({n}, {k // 2})")
        if scales.dtype != torch.float8_e4m3fn or tuple(scales.shape) != (n, k // 16):
            report.problem(f"{module}.weight_scale: {scales.dtype} {tuple(scales.shape)}, "
                           f"expected float8_e4m3fn ({n}, {k // 16})")
        if scale_2.dtype != torch.float32 or scale_2.numel() != 1:
            report.problem(f"{module}.weight_scale_2: {scale_2.dtype} {tuple(scale_2.shape)}")
        if vllm_modelopt_excluded(module, exclude):
            report.problem(f"{module}: quantized but vLLM would treat it as excluded")
        ours = our_dequantization(weight, scales, scale_2.float())
        error = relative_error(source[f"{module}.weight"].float(), ours)
        errors.append(error)
        if error > MAX_RELATIVE_ERROR:
            report.problem(f"{module}: relative error {error:.4f} against the source")
    for module in sorted(quantized):
        for pattern, partner in FUSED:
            if re.match(pattern, module):
                other = re.sub(pattern, partner, module)
                if other in quantized and not torch.equal(
                        tensors[f"{module}.weight_scale_2"], tensors[f"{other}.weight_scale_2"]):
                    report.problem(f"{module} / {other}: weight_scale_2 differ; engines fuse them")
    kept = {m for m in linear_modules(tensors, [".weight"]) if is_linear_weight_name(m)} - quantized
    for module in sorted(kept):
        if not vllm_modelopt_excluded(module, exclude):
            report.problem(f"{module}: unquantized Linear vLLM would not treat as excluded")
    print(f"  {len(quantized)} NVFP4 modules; relative error vs source mean "
          f"{sum(errors) / max(len(errors), 1):.4f}, max {max(errors, default=0):.4f}; "
          f"{len(kept)} kept Linears all excluded")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--source", required=True, help="the BF16 checkpoint it came from")
    arguments = parser.parse_args()
    config = json.loads((Path(arguments.checkpoint) / "config.json").read_text())
    source = load_tensors(arguments.source)
    report = Report()
    method = config.get("quantization_config", {}).get("quant_method")
    if method == "compressed-tensors":
        check_compressed_tensors(arguments.checkpoint, config, source, report)
    elif method == "modelopt":
        check_modelopt(arguments.checkpoint, config, source, report)
    else:
        report.problem(f"config.json quant_method {method!r} is neither modelopt nor "
                       "compressed-tensors")
    for problem in report.problems:
        print(f"  PROBLEM {problem}")
    print("  conforms" if not report.problems else f"  {len(report.problems)} problem(s)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
