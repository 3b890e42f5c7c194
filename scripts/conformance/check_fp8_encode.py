#!/usr/bin/env python3
"""Checks an FP8 block-scaled output (quantsmith quantize --scheme fp8-block) against an
independent numpy encode of its BF16 source.

    check_fp8_encode.py SOURCE FP8_OUTPUT

Every output `weight` stored F8_E4M3 must come with `weight_scale_inv` F32
[ceil(N/128), ceil(K/128)] and equal, bit for bit, the encode written from the format
definition (scripts/conformance/fp8_block_numpy.py): per 128x128 block scale_inv = amax / 448
in float32, code = E4M3 round-to-nearest-even of w / scale_inv (float32 division), saturating
at 448. Every other output tensor must be its source tensor unchanged (or its BF16 rounding).
config.json must declare quant_method fp8 with weight_block_size [128, 128] and must not list
an FP8 module among the layers it ignores. Exit 0 when all of it holds, 1 otherwise.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp8_block_numpy as fp8  # noqa: E402

SCALE_SUFFIX = "_scale_inv"


def float32_values(dtype, array):
    if dtype == "BF16":
        return fp8.bf16_bits_to_float32(array)
    if dtype in ("F32", "F16"):
        return array.astype(np.float32)
    raise ValueError(f"source dtype {dtype} is not a float weight")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="BF16 checkpoint directory (e.g. tests/data/deepseek-v3-tiny)")
    parser.add_argument("output", help="its FP8 block-scaled quantization")
    arguments = parser.parse_args()

    with open(os.path.join(arguments.output, "config.json")) as handle:
        quantization = json.load(handle).get("quantization_config") or {}
    source = fp8.read_checkpoint(arguments.source)
    output = fp8.read_checkpoint(arguments.output)

    problems = []
    if quantization.get("quant_method") != "fp8":
        problems.append(f"config.json: quant_method {quantization.get('quant_method')!r}, expected 'fp8'")
    if quantization.get("weight_block_size") != [fp8.BLOCK, fp8.BLOCK]:
        problems.append(f"config.json: weight_block_size {quantization.get('weight_block_size')!r}")
    ignored = set(quantization.get("ignored_layers") or []) | set(quantization.get("modules_to_not_convert") or [])

    encoded = copied = 0
    for name, (out_dtype, out_array) in sorted(output.items()):
        if name.endswith(SCALE_SUFFIX):
            weight = name[: -len(SCALE_SUFFIX)]
            if output.get(weight, ("",))[0] != "F8_E4M3":
                problems.append(f"{name}: a block scale beside no F8_E4M3 {weight}")
            continue
        if name not in source:
            problems.append(f"{name}: not in the source")
            continue
        if out_dtype != "F8_E4M3":
            problem = fp8.unchanged_problem(name, source[name], (out_dtype, out_array))
            if problem:
                problems.append(problem)
            copied += 1
            continue
        scale_name = name + SCALE_SUFFIX
        if scale_name not in output or output[scale_name][0] != "F32":
            problems.append(f"{name}: no F32 {scale_name}")
            continue
        module = name.rsplit(".", 1)[0]
        if module in ignored:
            problems.append(f"{name}: stored FP8 but config.json lists {module} as not quantized")
        codes, scale_inv = fp8.quantize_blocks(float32_values(*source[name]))
        got_scale = output[scale_name][1]
        if tuple(got_scale.shape) != tuple(scale_inv.shape):
            problems.append(f"{scale_name}: grid {list(got_scale.shape)}, expected {list(scale_inv.shape)}")
            continue
        if not np.array_equal(got_scale.view(np.uint32), scale_inv.view(np.uint32)):
            problems.append(f"{scale_name}: {int(np.count_nonzero(got_scale != scale_inv))} block "
                            "scales differ from amax / 448")
        elif not np.array_equal(out_array, codes):
            problems.append(f"{name}: {int(np.count_nonzero(out_array != codes))} of {codes.size} "
                            "codes differ from E4M3 round-to-nearest-even of w / scale_inv")
        encoded += 1
    missing = sorted(set(source) - set(output))
    if missing:
        problems.append(f"source tensors missing from the output: {missing[:5]}")

    print(f"fp8 encode: {encoded} weights encoded, {copied} tensors kept; {len(problems)} problem(s)")
    for problem in problems[:40]:
        print(f"  FAIL {problem}")
    if len(problems) > 40:
        print(f"  ... and {len(problems) - 40} more")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
