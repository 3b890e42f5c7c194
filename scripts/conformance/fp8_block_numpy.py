"""FP8 block-scaled weights (DeepSeek-V3's checkpoint format) and safetensors files, in numpy
only, written from the format definitions so that they check quantsmith independently.

The format (docs/formats/fp8-block.md): a Linear weight W [N, K] is stored as `weight`
F8_E4M3 [N, K] plus `weight_scale_inv` F32 [ceil(N/B), ceil(K/B)] with B = 128; the value of
element (n, k) is e4m3(weight[n, k]) * weight_scale_inv[n // B, k // B], the product taken in
float32. Blocks at the right and bottom edges may be partial.

E4M3 ("fn" variant, as torch.float8_e4m3fn): 1 sign bit, 4 exponent bits with bias 7, 3
mantissa bits; exponent 0 holds subnormals (m / 8 * 2^-6), exponent 15 with mantissa 7 is NaN,
and there is no infinity, so the largest finite magnitude is 448.
"""

import json
import struct

import numpy as np

BLOCK = 128
E4M3_MAX = 448.0


def e4m3_value(code):
    """The real value of one E4M3 byte, from the bit fields (NaN for 0x7F and 0xFF)."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent = (code >> 3) & 0xF
    mantissa = code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * (mantissa / 8.0) * 2.0**-6
    return sign * (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)


# Every byte's value: exact in float32 (at most 4 significant bits).
E4M3_TABLE = np.array([e4m3_value(code) for code in range(256)], dtype=np.float32)
# The finite non-negative values in code order 0x00..0x7E, which is also value order.
_POSITIVE = E4M3_TABLE[:0x7F].astype(np.float64)


def encode_e4m3(values):
    """float32 array -> E4M3 codes (uint8), round to nearest, ties to the even code, saturating
    at +-448. Inputs must be finite (the fixtures never hold NaN or Inf)."""
    values = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(values)):
        raise ValueError("encode_e4m3: non-finite input")
    magnitude = np.minimum(np.abs(values).astype(np.float64), E4M3_MAX)
    upper = np.searchsorted(_POSITIVE, magnitude, side="left")  # first value >= magnitude
    upper = np.minimum(upper, 0x7E)
    lower = np.maximum(upper - 1, 0)
    distance_upper = _POSITIVE[upper] - magnitude
    distance_lower = magnitude - _POSITIVE[lower]
    # Distances are exact in float64 (both operands have <= 24 significant bits).
    pick_upper = (distance_upper < distance_lower) | (
        (distance_upper == distance_lower) & (upper % 2 == 0)
    )
    code = np.where(pick_upper, upper, lower).astype(np.uint8)
    negative = np.signbit(values)
    return np.where(negative, code | 0x80, code).astype(np.uint8)


def expand_scales(scale_inv, shape, block=BLOCK):
    """[ceil(N/B), ceil(K/B)] block scales -> one scale per element of an [N, K] weight."""
    rows, cols = shape
    expanded = np.repeat(np.repeat(scale_inv, block, axis=0), block, axis=1)
    return expanded[:rows, :cols]


def scale_grid_shape(shape, block=BLOCK):
    rows, cols = shape
    return (-(-rows // block), -(-cols // block))


def quantize_blocks(weight, block=BLOCK):
    """float32 [N, K] -> (codes uint8 [N, K], weight_scale_inv float32 grid): per block
    scale_inv = amax / 448 and code = e4m3(w / scale_inv), both in float32."""
    weight = np.asarray(weight, dtype=np.float32)
    grid = scale_grid_shape(weight.shape, block)
    scale_inv = np.zeros(grid, dtype=np.float32)
    for row in range(grid[0]):
        for col in range(grid[1]):
            tile = weight[row * block : (row + 1) * block, col * block : (col + 1) * block]
            amax = np.float32(np.max(np.abs(tile)))
            if amax == 0:
                raise ValueError("quantize_blocks: an all-zero block has no scale")
            scale_inv[row, col] = amax / np.float32(E4M3_MAX)
    scaled = weight / expand_scales(scale_inv, weight.shape, block)
    return encode_e4m3(scaled), scale_inv


def dequantize_blocks(codes, scale_inv, block=BLOCK):
    """E4M3 codes [N, K] and their block scales -> float32 [N, K] (product in float32)."""
    codes = np.asarray(codes, dtype=np.uint8)
    expected = scale_grid_shape(codes.shape, block)
    if tuple(scale_inv.shape) != expected:
        raise ValueError(
            f"scale grid {list(scale_inv.shape)} does not cover weight {list(codes.shape)}"
            f" in {block}x{block} blocks (expected {list(expected)})"
        )
    return E4M3_TABLE[codes] * expand_scales(scale_inv.astype(np.float32), codes.shape, block)


def float32_to_bf16_bits(values):
    """float32 -> BF16 bit patterns (uint16), round to nearest even; NaN stays a quiet NaN."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(values, dtype=np.float32))
    rounded = np.where(nan, (bits >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16)


def bf16_bits_to_float32(bits):
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# safetensors: 8-byte little-endian header length, JSON header, then raw little-endian data.
_NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # raw bits; bf16_bits_to_float32 widens them
    "F8_E4M3": np.uint8,  # raw codes; E4M3_TABLE decodes them
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path):
    """{name: (dtype string, numpy array of the stored bits/values)}; BF16 and F8_E4M3 come
    back as their raw uint16 / uint8 words."""
    with open(path, "rb") as handle:
        data = handle.read()
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    body = memoryview(data)[8 + header_length :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry["dtype"]
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"{path}: tensor '{name}': dtype {dtype} not handled here")
        begin, end = entry["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=_NUMPY_DTYPES[dtype]).reshape(entry["shape"])
        tensors[name] = (dtype, array)
    return tensors


def read_checkpoint(directory):
    """Every tensor of a (sharded or single-file) safetensors checkpoint directory."""
    import os

    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index_path):
        with open(index_path) as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        for tensor, value in read_safetensors(os.path.join(directory, name)).items():
            if tensor in tensors:
                raise ValueError(f"{directory}: tensor '{tensor}' stored twice")
            tensors[tensor] = value
    return tensors


def unchanged_problem(name, source, output):
    """None when an output tensor carries a source tensor unchanged: the same dtype and bytes,
    or BF16 that is the round-to-nearest-even of a wider float; else what is wrong. Both
    arguments are (dtype, array) as read_safetensors returns them."""
    (dtype, array), (out_dtype, out_array) = source, output
    if tuple(out_array.shape) != tuple(array.shape):
        return f"{name}: shape {list(out_array.shape)}, source {list(array.shape)}"
    if out_dtype == dtype:
        if not np.array_equal(out_array.view(np.uint8), array.view(np.uint8)):
            return f"{name}: {dtype} bytes differ from the source"
        return None
    if out_dtype == "BF16" and dtype in ("F32", "F16"):  # both exact in float32
        if not np.array_equal(out_array, float32_to_bf16_bits(array.astype(np.float32))):
            return f"{name}: BF16 is not the round-to-nearest-even of its {dtype} value"
        return None
    return f"{name}: dtype {out_dtype}, source {dtype}"
