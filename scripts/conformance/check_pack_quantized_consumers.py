#!/usr/bin/env python3
"""Checks a quantsmith pack-quantized (INT8 / INT4) checkpoint against compressed-tensors.

The config block must validate with the library's own pydantic models; every pack-quantized
module is decompressed by the library's own PackedQuantizationCompressor with the scheme of the
config group that covers it, and must equal the format semantics decoded here independently
(formats-compressed-tensors.md §4.2: int32 words, element 0 in the low bits, values stored
offset by 2^(b-1), zero points packed along the output dimension, w = (q - z) * s) up to the
library's one rounding to the scale dtype, and stay close to the BF16 source.

Usage: check_pack_quantized_consumers.py CHECKPOINT --source BF16_CHECKPOINT
Exit 0 when everything conforms, 1 with the list of problems otherwise.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from check_nvfp4_consumers import load_tensors

# The library multiplies in the scale's dtype (BF16): one rounding, 2^-8 relative at most.
BF16_RELATIVE_STEP = 2.0 ** -8
MAX_RELATIVE_ERROR = {4: 0.2, 8: 0.02}


def unpack_fields(words, count, bits):
    """The first `count` b-bit fields of each row of int32 words, element 0 lowest."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    fields = (words.to(torch.int64).unsqueeze(-1) & 0xFFFFFFFF) >> shifts
    fields = (fields & ((1 << bits) - 1)).reshape(words.shape[0], -1)
    return fields[:, :count] - (1 << (bits - 1))


def spec_decode(packed, scales, zero_points, shape, bits):
    rows, cols = shape
    q = unpack_fields(packed, cols, bits).double()
    groups = scales.shape[1]
    if zero_points is not None:
        z = unpack_fields(zero_points.t().contiguous(), rows, bits).t().double()
    else:
        z = torch.zeros(rows, groups, dtype=torch.float64)
    width = -(-cols // groups)
    column_group = torch.arange(cols) // width
    return (q - z[:, column_group]) * scales.double()[:, column_group]


def covering_group(module, parsed):
    for entry in parsed.ignore:
        if (entry.startswith("re:") and re.match(entry[3:], module)) or entry == module:
            return None
    for kind in ("exact", "regex"):
        for name, group in parsed.config_groups.items():
            for target in group.targets:
                regex = target.startswith("re:")
                if kind == "regex" and regex and re.match(target[3:], module):
                    return name, group
                if kind == "exact" and not regex and target == module:
                    return name, group
    for name, group in parsed.config_groups.items():
        if "Linear" in group.targets:
            return name, group
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--source", required=True)
    arguments = parser.parse_args()

    from compressed_tensors.compressors import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig

    config = json.loads((Path(arguments.checkpoint) / "config.json").read_text())
    parsed = QuantizationConfig.model_validate(config["quantization_config"])
    print(f"  QuantizationConfig validates: format={parsed.format}, "
          f"{len(parsed.config_groups)} group(s), {len(parsed.ignore)} ignore entries")
    tensors = load_tensors(arguments.checkpoint)
    source = load_tensors(arguments.source)
    problems = []
    worst_gap, errors, modules = 0.0, {}, 0
    for name in sorted(tensors):
        if not name.endswith(".weight_packed") or tensors[name].dtype != torch.int32:
            continue
        module = name[: -len(".weight_packed")]
        covering = covering_group(module, parsed)
        if covering is None:
            problems.append(f"{module}: pack-quantized but no config group covers it")
            continue
        group_name, scheme = covering
        if scheme.format not in (None, "pack-quantized") and parsed.format != "pack-quantized" \
                and scheme.format != "pack-quantized":
            problems.append(f"{module}: its group {group_name} has format {scheme.format}")
        state = {key: tensors[f"{module}.{key}"]
                 for key in ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
                 if f"{module}.{key}" in tensors}
        library = PackedQuantizationCompressor.decompress(state, scheme)["weight"].double()
        shape = tuple(int(v) for v in tensors[f"{module}.weight_shape"])
        bits = scheme.weights.num_bits
        ours = spec_decode(tensors[name], tensors[f"{module}.weight_scale"].float(),
                           tensors.get(f"{module}.weight_zero_point"), shape, bits)
        gap = float((library - ours).abs().max() / ours.abs().max().clamp_min(1e-30))
        worst_gap = max(worst_gap, gap)
        if tuple(library.shape) != shape or gap > BF16_RELATIVE_STEP:
            problems.append(f"{module}: library decompression differs from the format semantics "
                            f"by {gap:.3g} of the weight's range")
        reference = source[f"{module}.weight"].double()
        error = float((reference - library).norm() / reference.norm().clamp_min(1e-30))
        errors.setdefault(bits, []).append(error)
        if error > MAX_RELATIVE_ERROR.get(bits, 0.5):
            problems.append(f"{module}: relative error {error:.4f} against the source")
        modules += 1
    summary = ", ".join(f"INT{bits}: {len(values)} modules, relative error vs source mean "
                        f"{sum(values) / len(values):.4f} max {max(values):.4f}"
                        for bits, values in sorted(errors.items()))
    print(f"  {modules} pack-quantized modules decompressed by compressed-tensors; max |library - "
          f"spec| / max|w| = {worst_gap:.3g}; {summary}")
    if modules == 0:
        problems.append("no pack-quantized module found")
    for problem in problems:
        print(f"  problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
