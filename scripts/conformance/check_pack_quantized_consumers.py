#!/usr/bin/env python3
"""Checks a quantsmith pack-quantized (INT8 / INT4) checkpoint against compressed-tensors.

1. Config: the quantization_config block, and each of its groups and weight arguments on their
   own, validate with the library's pydantic models; ModelCompressor accepts the config; the
   library's own apply_quantization_config, run on a meta-device model with one Linear per
   Linear of the checkpoint, gives every pack-quantized module a pack-quantized integer scheme
   whose bits, group size and symmetry fit its tensors, and none to the Linears left in BF16.
2. Decode: every pack-quantized module is decompressed by the library's own
   PackedQuantizationCompressor with the scheme the library assigned it, and must EQUAL the
   format semantics decoded here in numpy from the raw safetensors bytes
   (docs/formats/compressed-tensors.md, "pack-quantized": int32 words, element 0 in the low
   bits, codes offset by 2^(b-1), zero points packed along the output dimension,
   w = (q - z) * s, exact in f64, then rounded once to the scale dtype as the library's
   arithmetic does, "Arithmetic dtype"). The codes and zero points the library unpacks must
   equal ours too.
3. Accuracy: relative L2 error of the library's decompression against the BF16 source, per
   module, and (with --quantsmith) agreement with the per-module relative errors that
   `quantsmith validate --ref --json` reports.
4. Rounding: each source weight quantized by the library's own round-to-nearest
   (forward.quantize) with our stored scales and zero points, and with the scales and zero
   points its min-max observer gives (per-group min/max in the weight dtype, as
   llm-compressor's memoryless_minmax, then calculate_qparams); codes, scales and zero points
   that differ from ours are counted. Must be 0 for round-to-nearest outputs; for GPTQ
   outputs (--gptq) only reported, since GPTQ moves codes on purpose.

Usage: check_pack_quantized_consumers.py CHECKPOINT --source BF16_CHECKPOINT
           [--quantsmith BINARY] [--gptq] [--label NAME] [--summary FILE]
Exit 0 when everything conforms, 1 with the list of problems otherwise.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from check_nvfp4_consumers import load_tensors

MAX_RELATIVE_ERROR = {4: 0.2, 8: 0.02}
# Our validate computes in f64 from the same decoded values; the library's error is f64 too.
VALIDATE_AGREEMENT = 1e-6

# ---------------------------------------------------------------------------------------------
# The format semantics, in numpy from the raw bytes (no torch, no safetensors package).

NUMPY_DTYPES = {"I32": "<i4", "I64": "<i8", "I8": "<i1", "BF16": "<u2", "F16": "<f2",
                "F32": "<f4", "U8": "<u1"}


def read_raw_tensors(directory):
    """name -> (safetensors dtype, numpy array) for every tensor of every shard."""
    tensors = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        data = path.read_bytes()
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_size])
        base = 8 + header_size
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            array = np.frombuffer(data[base + begin:base + end], NUMPY_DTYPES[entry["dtype"]])
            tensors[name] = (entry["dtype"], array.reshape(entry["shape"]))
    return tensors


def float_values(dtype, array):
    """f64 values of a float tensor; BF16 is the high half of an f32."""
    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return array.astype(np.float64)


def round_to_dtype(values, dtype):
    """Round f64 values to `dtype` (nearest even). Products (q - z) * s of a <= 9-bit integer
    and a BF16 / F16 scale are exact in f32, so for BF16 the f32 step rounds nothing."""
    if dtype == "F32":
        return values.astype(np.float32).astype(np.float64)
    if dtype == "F16":
        return values.astype(np.float16).astype(np.float64)
    single = values.astype(np.float32)
    assert np.array_equal(single.astype(np.float64), values), "not exact in f32"
    bits = single.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def unpack_rows(words, count, bits):
    """The first `count` b-bit fields of each row as pack_to_int32 stores them: floor(32/b)
    fields per word, field i of a word in bits [i*b, i*b+b), none split across words; minus
    the 2^(b-1) offset."""
    stream = words.view(np.uint32).astype(np.uint64)
    per_word = 32 // bits
    index = np.arange(count, dtype=np.uint64)
    word = (index // per_word).astype(np.int64)
    offset = (index % per_word) * bits
    fields = (stream[:, word] >> offset) & ((1 << bits) - 1)
    return fields.astype(np.int64) - (1 << (bits - 1))


def spec_decode(raw, module, bits):
    """(codes, zero points per group, exact f64 weights, weights rounded to the scale dtype)."""
    rows, cols = (int(v) for v in raw[f"{module}.weight_shape"][1])
    codes = unpack_rows(raw[f"{module}.weight_packed"][1], cols, bits)
    scale_dtype, scale_array = raw[f"{module}.weight_scale"]
    scales = float_values(scale_dtype, scale_array)
    groups = scales.shape[1]
    if f"{module}.weight_zero_point" in raw:
        zero_points = unpack_rows(raw[f"{module}.weight_zero_point"][1].T.copy(), rows, bits).T
    else:
        zero_points = np.zeros((rows, groups), dtype=np.int64)
    column_group = np.arange(cols) // (cols // groups)
    exact = (codes - zero_points[:, column_group]) * scales[:, column_group]
    return codes, zero_points, exact, round_to_dtype(exact, scale_dtype)


# ---------------------------------------------------------------------------------------------
# The library.

def build_meta_model(linear_shapes):
    """A module tree with one meta-device nn.Linear per checkpoint Linear, named as in it."""
    root = torch.nn.Module()
    for name, (rows, cols) in linear_shapes.items():
        parent = root
        *path, last = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(last, torch.nn.Linear(cols, rows, bias=False, device="meta"))
    return root


def count_modules_per_group(model, parsed, modules):
    """How many modules each config group is the scheme of, by the library's own priority
    (match_targets: exact names, then regexes, then class names; first group in config order
    on a tie). The library's "Could not match" warning can name a group's target that is in
    use: match_named_modules credits only the first matching target in config order."""
    from compressed_tensors.utils.match import match_targets
    target_group = {}
    for name, group in parsed.config_groups.items():
        for target in group.targets:
            target_group.setdefault(target, name)
    counts = dict.fromkeys(parsed.config_groups, 0)
    for module in modules:
        matched = match_targets(module, model.get_submodule(module), target_group)
        counts[target_group[matched[0]]] += 1
    return counts


def library_decompress(state, scheme):
    """The installed compressed-tensors' PackedQuantizationCompressor on one module (per-module
    state dicts from 0.20, decompress_weight before)."""
    from compressed_tensors.compressors import PackedQuantizationCompressor
    if hasattr(PackedQuantizationCompressor, "decompress_weight"):
        return PackedQuantizationCompressor(config=None).decompress_weight(
            compressed_data=state, quantization_args=scheme.weights)
    return PackedQuantizationCompressor.decompress(state, scheme)["weight"]


def library_minmax_qparams(weight, args):
    """llm-compressor's memoryless min-max observer (min / max per group, in the weight dtype),
    then compressed-tensors' calculate_qparams."""
    from compressed_tensors.quantization.utils import calculate_qparams
    if args.strategy == "group":
        grouped = weight.unflatten(-1, (weight.shape[-1] // args.group_size, args.group_size))
        low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    else:  # channel
        low, high = weight.amin(dim=-1, keepdim=True), weight.amax(dim=-1, keepdim=True)
    scale, zero_point = calculate_qparams(low, high, args)
    all_zero = (low == 0) & (high == 0)  # the library's zero point is NaN cast to int8 there
    return scale, zero_point, all_zero


def library_codes(weight, scale, zero_point, args):
    from compressed_tensors.quantization.lifecycle.forward import quantize
    return quantize(x=weight, scale=scale, zero_point=zero_point, args=args, dtype=torch.int8)


def validate_errors(quantsmith, checkpoint, source):
    result = subprocess.run([quantsmith, "validate", checkpoint, "--ref", source, "--json"],
                            capture_output=True, text=True, check=False)
    report = json.loads(result.stdout)
    return {row["tensor"]: row for row in report.get("reference_comparisons", [])}, report


# ---------------------------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--source", required=True, help="the BF16 checkpoint it came from")
    parser.add_argument("--quantsmith", help="compare with `quantsmith validate --ref --json`")
    parser.add_argument("--gptq", action="store_true",
                        help="codes come from GPTQ: report round-to-nearest differences only")
    parser.add_argument("--label", help="name of this output in the summary")
    parser.add_argument("--summary", help="append this output's summary row (JSON) to FILE")
    arguments = parser.parse_args()

    import compressed_tensors
    from compressed_tensors.compressors import ModelCompressor, PackedQuantizationCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig,
                                                 QuantizationScheme, apply_quantization_config)

    problems = []
    config = json.loads((Path(arguments.checkpoint) / "config.json").read_text())
    block = config["quantization_config"]
    parsed = QuantizationConfig.model_validate(block)
    for name, group in block["config_groups"].items():
        QuantizationScheme.model_validate(group)
        if group.get("weights") is not None:
            QuantizationArgs.model_validate(group["weights"])
    ModelCompressor(quantization_config=parsed)
    print(f"  compressed-tensors {compressed_tensors.__version__}: QuantizationConfig, its "
          f"{len(parsed.config_groups)} group(s) and their weight args validate "
          f"(format={parsed.format}, {len(parsed.ignore)} ignore entries)")

    tensors = load_tensors(arguments.checkpoint)
    raw = read_raw_tensors(arguments.checkpoint)
    source = load_tensors(arguments.source)
    packed = sorted(n[: -len(".weight_packed")] for n in tensors if n.endswith(".weight_packed"))
    kept = sorted(n[: -len(".weight")] for n, t in tensors.items()
                  if n.endswith(".weight") and t.dim() == 2 and "embed_tokens" not in n)
    shapes = {m: tuple(int(v) for v in tensors[f"{m}.weight_shape"]) for m in packed}
    shapes.update({m: tuple(tensors[f"{m}.weight"].shape) for m in kept})
    model = build_meta_model(shapes)
    apply_quantization_config(model, parsed, show_progress=False)
    schemes = {m: getattr(model.get_submodule(m), "quantization_scheme", None) for m in shapes}
    group_counts = count_modules_per_group(model, parsed, [m for m in shapes if schemes[m]])
    for name, count in group_counts.items():
        if count == 0:
            problems.append(f"config group {name} is the scheme of no module")
    for module in kept:
        if schemes[module] is not None:
            problems.append(f"{module}: BF16 in the checkpoint but the library assigns it "
                            f"{schemes[module].weights}")

    validate_rows = {}
    if arguments.quantsmith:
        validate_rows, validate_report = validate_errors(
            arguments.quantsmith, arguments.checkpoint, arguments.source)
        if not validate_report.get("valid", False):
            problems.append(f"quantsmith validate: {validate_report.get('findings')}")

    worst_decode_gap = 0.0     # |library - spec decode|, must be 0
    worst_exact_gap = 0.0      # |library - exact (q - z) s| / max|w|: the one rounding
    worst_validate_gap = 0.0
    code_mismatches = zero_point_mismatches = 0
    errors = {}
    rounding = {"modules": 0, "codes": 0, "codes_ours_scale": 0, "codes_minmax": 0,
                "scales": 0, "scales_differ": 0, "zero_points_differ": 0}
    for module in packed:
        scheme = schemes[module]
        if scheme is None or scheme.weights is None or scheme.weights.type != "int":
            problems.append(f"{module}: pack-quantized, but the library assigns it no integer "
                            f"scheme ({scheme})")
            continue
        args = scheme.weights
        bits = args.num_bits
        group_format = scheme.format or parsed.format
        if group_format != "pack-quantized":
            problems.append(f"{module}: its scheme's format is {group_format}")
        rows, cols = shapes[module]
        scale = tensors[f"{module}.weight_scale"]
        expected_groups = 1 if args.strategy == "channel" else cols // (args.group_size or cols)
        has_zero_point = f"{module}.weight_zero_point" in tensors
        if tuple(scale.shape) != (rows, expected_groups) or has_zero_point == args.symmetric:
            problems.append(f"{module}: scale {tuple(scale.shape)}, zero point {has_zero_point} "
                            f"do not fit the scheme ({args.strategy}, group {args.group_size}, "
                            f"symmetric {args.symmetric})")
            continue

        state = {key: tensors[f"{module}.{key}"]
                 for key in ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
                 if f"{module}.{key}" in tensors}
        library = library_decompress(state, scheme)
        codes, zero_points, exact, decoded = spec_decode(raw, module, bits)
        if library.dtype != scale.dtype or tuple(library.shape) != (rows, cols):
            problems.append(f"{module}: library returns {library.dtype} {tuple(library.shape)}")
            continue
        library64 = library.double().numpy()
        gap = float(np.abs(library64 - decoded).max())
        worst_decode_gap = max(worst_decode_gap, gap)
        worst_exact_gap = max(worst_exact_gap,
                              float(np.abs(library64 - exact).max() / np.abs(exact).max()))
        if gap != 0.0:
            problems.append(f"{module}: library decompression differs from the spec decode by "
                            f"up to {gap:.3g}")
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
        library_q = unpack_from_int32(state["weight_packed"], bits, state["weight_shape"])
        if not np.array_equal(library_q.numpy().astype(np.int64), codes):
            code_mismatches += 1
            problems.append(f"{module}: the library unpacks other codes than the spec")
        if has_zero_point:
            library_z = unpack_from_int32(state["weight_zero_point"], bits,
                                          (rows, expected_groups), packed_dim=0)
            if not np.array_equal(library_z.numpy().astype(np.int64), zero_points):
                zero_point_mismatches += 1
                problems.append(f"{module}: the library unpacks other zero points than the spec")

        reference = source[f"{module}.weight"]
        reference64 = reference.double().numpy()
        error = float(np.linalg.norm(reference64 - library64) / np.linalg.norm(reference64))
        errors.setdefault(bits, []).append(error)
        if error > MAX_RELATIVE_ERROR.get(bits, 0.5):
            problems.append(f"{module}: relative error {error:.4f} against the source")
        if arguments.quantsmith:
            row = validate_rows.get(f"{module}.weight")
            if row is None:
                problems.append(f"{module}: no relative_error row in quantsmith validate --json")
            else:
                difference = abs(row["relative_error"] - error)
                worst_validate_gap = max(worst_validate_gap, difference)
                if difference > VALIDATE_AGREEMENT:
                    problems.append(f"{module}: quantsmith validate says relative error "
                                    f"{row['relative_error']:.8f}, the library's decode "
                                    f"{error:.8f}")

        # The library's own round-to-nearest on the source weight.
        ours_scale = scale
        ours_zero = (torch.from_numpy(zero_points).to(torch.int8) if has_zero_point else None)
        ours_codes = torch.from_numpy(codes).to(torch.int8)
        with_ours = library_codes(reference, ours_scale, ours_zero, args)
        minmax_scale, minmax_zero, all_zero = library_minmax_qparams(reference, args)
        with_minmax = library_codes(reference, minmax_scale,
                                    None if args.symmetric else minmax_zero, args)
        rounding["modules"] += 1
        rounding["codes"] += ours_codes.numel()
        rounding["codes_ours_scale"] += int((with_ours != ours_codes).sum())
        rounding["codes_minmax"] += int((with_minmax != ours_codes).sum())
        rounding["scales"] += scale.numel()
        rounding["scales_differ"] += int((minmax_scale.view(torch.int16)
                                          != scale.view(torch.int16)).sum()
                                         if scale.dtype == torch.bfloat16
                                         else (minmax_scale != scale).sum())
        if has_zero_point:
            rounding["zero_points_differ"] += int(
                ((minmax_zero != ours_zero) & ~all_zero).sum())

    if not packed:
        problems.append("no pack-quantized module found")
    if not arguments.gptq:
        for key, what in (("codes_ours_scale", "codes (library quantize, our scales)"),
                          ("codes_minmax", "codes (library quantize, its min-max observer)"),
                          ("scales_differ", "scales (library min-max observer)"),
                          ("zero_points_differ", "zero points (library min-max observer)")):
            if rounding[key]:
                problems.append(f"round-to-nearest: {rounding[key]} {what} differ from ours")

    by_bits = ", ".join(f"INT{b}: {len(v)} modules, rel. error vs BF16 mean {np.mean(v):.4f} "
                        f"max {np.max(v):.4f}" for b, v in sorted(errors.items()))
    per_group = ", ".join(f"{name} {count}" for name, count in group_counts.items())
    print(f"  {len(packed)} pack-quantized modules decompressed by PackedQuantizationCompressor "
          f"with the schemes apply_quantization_config assigns ({per_group}); {len(kept)} BF16 "
          f"Linears unassigned; {by_bits}")
    print(f"  library vs spec decode: max |Δ| = {worst_decode_gap:.3g} (codes differing in "
          f"{code_mismatches} modules, zero points in {zero_point_mismatches}); vs the unrounded "
          f"(q - z)·s: {worst_exact_gap:.3g} of max|w| (the library's one rounding to the scale "
          f"dtype)")
    if arguments.quantsmith:
        print(f"  quantsmith validate relative errors agree with the library's to "
              f"{worst_validate_gap:.2g} (limit {VALIDATE_AGREEMENT:g})")
    kind = "GPTQ, reported only" if arguments.gptq else "round-to-nearest, must be 0"
    print(f"  compressed-tensors quantize() of the BF16 source ({kind}): codes differing from "
          f"ours {rounding['codes_ours_scale']} / {rounding['codes']} with our scales and zero "
          f"points, {rounding['codes_minmax']} with its min-max observer's; scales differing "
          f"{rounding['scales_differ']} / {rounding['scales']}, zero points "
          f"{rounding['zero_points_differ']}")
    for problem in problems:
        print(f"  PROBLEM {problem}")
    print("  conforms" if not problems else f"  {len(problems)} problem(s)")

    if arguments.summary:
        row = {"output": arguments.label or Path(arguments.checkpoint).name,
               "groups": len(parsed.config_groups),
               "modules": {f"int{b}": len(v) for b, v in sorted(errors.items())},
               "decode_gap": worst_decode_gap, "validate_gap": worst_validate_gap,
               "mean_error": {f"int{b}": float(np.mean(v)) for b, v in sorted(errors.items())},
               "rounding": rounding, "gptq": arguments.gptq, "problems": len(problems)}
        with open(arguments.summary, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
