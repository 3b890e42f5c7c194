#!/usr/bin/env python3
"""Checks an FP8 -> BF16 conversion (quantsmith quantize --scheme bf16) of a DeepSeek FP8
block-scaled checkpoint against an independent numpy decode of the source.

    check_fp8_decode.py FP8_SOURCE BF16_OUTPUT

Every F8_E4M3 `weight` of the source, with its `weight_scale_inv`, is decoded from the format
definition (scripts/conformance/fp8_block_numpy.py): value = e4m3(code) * scale_inv of its
128x128 block, the product in float32, then rounded to BF16 with round-to-nearest-even. The
output must hold that BF16 tensor bit for bit, under the same name and shape, and no
`weight_scale_inv`. Every other source tensor must be in the output unchanged: the same dtype
and bytes, or (a float cast) BF16 equal to the round-to-nearest-even of its value. The output's
config.json must no longer declare FP8 quantization. Exit 0 when all of it holds, 1 otherwise.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp8_block_numpy as fp8  # noqa: E402

SCALE_SUFFIX = "_scale_inv"


def block_size(config):
    block = (config.get("quantization_config") or {}).get("weight_block_size", [fp8.BLOCK, fp8.BLOCK])
    if len(block) != 2 or block[0] != block[1]:
        raise SystemExit(f"weight_block_size {block}: only square blocks are checked here")
    return block[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="FP8 checkpoint directory (e.g. tests/data/deepseek-v3-tiny-fp8)")
    parser.add_argument("output", help="its BF16 conversion")
    arguments = parser.parse_args()

    with open(os.path.join(arguments.source, "config.json")) as handle:
        source_config = json.load(handle)
    with open(os.path.join(arguments.output, "config.json")) as handle:
        output_config = json.load(handle)
    block = block_size(source_config)
    source = fp8.read_checkpoint(arguments.source)
    output = fp8.read_checkpoint(arguments.output)

    problems = []
    decoded = copied = cast = 0
    for name, (dtype, array) in sorted(source.items()):
        if name.endswith(SCALE_SUFFIX):
            if name in output:
                problems.append(f"{name}: the block scale is still in the output")
            continue
        if name not in output:
            problems.append(f"{name}: missing from the output")
            continue
        out_dtype, out_array = output[name]
        if dtype == "F8_E4M3":
            scale_name = name + SCALE_SUFFIX
            if scale_name not in source:
                problems.append(f"{name}: the source has no {scale_name}")
                continue
            scale_dtype, scale = source[scale_name]
            if scale_dtype != "F32":
                problems.append(f"{scale_name}: dtype {scale_dtype}, expected F32")
                continue
            expected = fp8.float32_to_bf16_bits(fp8.dequantize_blocks(array, scale, block))
            if out_dtype != "BF16" or tuple(out_array.shape) != tuple(array.shape):
                problems.append(f"{name}: {out_dtype} {list(out_array.shape)}, expected BF16 "
                                f"{list(array.shape)}")
                continue
            mismatches = int(np.count_nonzero(out_array != expected))
            if mismatches:
                problems.append(f"{name}: {mismatches} of {expected.size} BF16 values differ from "
                                "the decode (e4m3 * scale_inv in f32, rounded to nearest even)")
            decoded += 1
        else:
            problem = fp8.unchanged_problem(name, (dtype, array), (out_dtype, out_array))
            if problem:
                problems.append(problem)
            elif out_dtype == dtype:
                copied += 1
            else:
                cast += 1
    extra = sorted(set(output) - set(source))
    if extra:
        problems.append(f"the output has tensors the source lacks: {extra[:5]}")
    quantization = output_config.get("quantization_config") or {}
    if quantization.get("quant_method") == "fp8":
        problems.append("config.json still declares quant_method fp8")
    for key in ("model_type", "architectures", "num_hidden_layers", "hidden_size"):
        if output_config.get(key) != source_config.get(key):
            problems.append(f"config.json: {key} is {output_config.get(key)!r}, "
                            f"source {source_config.get(key)!r}")

    print(f"fp8 decode: {decoded} FP8 weights decoded ({block}x{block} blocks), {copied} tensors "
          f"copied, {cast} cast to BF16; {len(problems)} problem(s)")
    for problem in problems[:40]:
        print(f"  FAIL {problem}")
    if len(problems) > 40:
        print(f"  ... and {len(problems) - 40} more")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
