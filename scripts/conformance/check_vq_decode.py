#!/usr/bin/env python3
"""Decodes a vector-quantized checkpoint with numpy, from docs/formats/vq.md alone, and
compares it with `quantsmith dequantize --dtype f32` of the same checkpoint.

    check_vq_decode.py VQ_CHECKPOINT DEQUANTIZED_F32

For every module config.json's quantization_config.vq declares: its tier (d, K, index bits)
from `vq.tiers`; its codes `<module>.vq_codes` (I32 [R, words]) unpacked as one little-endian
bit stream per row (index j in bits j*b .. j*b+b-1, bit i of the stream being bit i mod 32 of
word i // 32), every index below K and the bits after the row's last index zero; its scales
`<module>.vq_scales` [R, C/128] and its codebook tensor [K, d] (F16 or BF16) widened to
float32; then w[r, c] = codebook[index(r, c // d)][c % d] * scale[r, c // 128] in float32. The
dequantized checkpoint must hold `<module>.weight` F32 [R, C] equal to it bit for bit, and no
VQ tensors or codebooks. Exit 0 when all of it holds, 1 otherwise.
"""

import argparse
import glob
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
          "I32": np.dtype("<i4"), "I64": np.dtype("<i8"), "U8": np.dtype("u1"),
          "I8": np.dtype("i1"), "F64": np.dtype("<f8")}


def read_checkpoint(directory):
    """name -> (dtype string, numpy array of the raw elements), over every shard."""
    tensors = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        with open(path, "rb") as handle:
            data = handle.read()
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
        base = 8 + length
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            dtype = entry["dtype"]
            if dtype not in DTYPES:
                continue  # not a dtype this check needs
            array = np.frombuffer(data[base + begin:base + end], dtype=DTYPES[dtype])
            tensors[name] = (dtype, array.reshape(entry["shape"]))
    return tensors


def to_float32(dtype, array):
    if dtype == "BF16":  # the upper 16 bits of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("F16", "F32"):
        return array.astype(np.float32)
    raise ValueError(f"{dtype} is not a float dtype the format allows here")


def unpack_rows(codes, count, bits):
    """[R, words] int32 -> [R, count] indices, and whether the padding bits are all zero."""
    rows = codes.shape[0]
    stream = np.unpackbits(codes.astype("<i4").view(np.uint8).reshape(rows, -1), axis=1,
                           bitorder="little")
    fields = stream[:, :count * bits].reshape(rows, count, bits).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(bits, dtype=np.uint64))
    indices = (fields * weights).sum(axis=2)
    return indices, not stream[:, count * bits:].any()


def decode_module(module, declared, tiers, tensors, problems):
    tier = tiers[declared["tier"]]
    d, k = int(tier["d"]), int(tier["k"])
    bits = max(1, (k - 1).bit_length())
    codes_dtype, codes = tensors[module + ".vq_codes"]
    scales_dtype, scales = tensors[module + ".vq_scales"]
    book_dtype, book = tensors[declared["codebook"]]
    if codes_dtype != "I32" or book_dtype not in ("F16", "BF16") or book.shape != (k, d):
        problems.append(f"{module}: codes {codes_dtype}, codebook {book_dtype} {list(book.shape)}")
        return None
    rows, groups = scales.shape
    cols = groups * 128
    words = -(-(cols // d) * bits // 32)
    if codes.shape != (rows, words):
        problems.append(f"{module}: codes {list(codes.shape)}, expected [{rows}, {words}]")
        return None
    indices, clean = unpack_rows(codes, cols // d, bits)
    if not clean:
        problems.append(f"{module}: bits set after a row's last index")
    if (indices >= k).any():
        row = int(np.argwhere(indices >= k)[0][0])
        problems.append(f"{module}: an index >= K={k} in row {row}")
        return None
    codewords = to_float32(book_dtype, book)
    values = codewords[indices.astype(np.int64)].reshape(rows, cols)
    per_column = np.repeat(to_float32(scales_dtype, scales), 128, axis=1)
    return (values * per_column).astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint with VQ modules")
    parser.add_argument("dequantized", help="quantsmith dequantize --dtype f32 of it")
    arguments = parser.parse_args()
    with open(os.path.join(arguments.checkpoint, "config.json")) as handle:
        vq = json.load(handle)["quantization_config"]["vq"]
    with open(os.path.join(arguments.dequantized, "config.json")) as handle:
        dequantized_config = json.load(handle)
    problems = []
    if vq.get("version") != 1 or vq.get("norm_group") != 128 or vq.get("pack") != "lsb_first_u32":
        problems.append(f"vq header: version {vq.get('version')}, norm_group "
                        f"{vq.get('norm_group')}, pack {vq.get('pack')}")
    if "quantization_config" in dequantized_config:
        problems.append("the dequantized config.json still declares quantization")
    source = read_checkpoint(arguments.checkpoint)
    output = read_checkpoint(arguments.dequantized)
    codebooks = {declared["codebook"] for declared in vq["modules"].values()}
    compared = 0
    for module, declared in sorted(vq["modules"].items()):
        expected = decode_module(module, declared, vq["tiers"], source, problems)
        if expected is None:
            continue
        found = output.get(module + ".weight")
        if found is None or found[0] != "F32" or found[1].shape != expected.shape:
            problems.append(f"{module}.weight: missing, or not F32 {list(expected.shape)}")
            continue
        ours = expected.view(np.uint32)
        theirs = found[1].view(np.uint32)
        if not np.array_equal(ours, theirs):
            bad = np.argwhere(ours != theirs)[0]
            problems.append(f"{module}.weight differs at {list(bad)}: numpy "
                            f"{expected[tuple(bad)]!r}, quantsmith {found[1][tuple(bad)]!r}")
        compared += 1
    leftovers = [name for name in output if name.endswith((".vq_codes", ".vq_scales"))
                 or name in codebooks]
    if leftovers:
        problems.append(f"VQ tensors left in the dequantized checkpoint: {leftovers[:3]}")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    print(f"check_vq_decode: {compared} VQ modules decoded with numpy, "
          f"{'all equal' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems or compared == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
