#!/usr/bin/env python3
"""Prints the pack-quantized conformance summary: one row per output checked by
check_pack_quantized_consumers.py --summary FILE (JSON lines).

Usage: summarize_pack_quantized.py FILE
Exit 1 when a row reports problems or the file has no rows.
"""

import json
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    header = ("output", "groups", "modules INT8/INT4", "max|Δ| lib−spec", "max|Δ| rel.err "
              "lib−validate", "mean rel.err INT8/INT4", "codes ≠ (our s,z / lib minmax)",
              "scales ≠", "problems")
    table = [header]
    for row in rows:
        modules = row["modules"]
        errors = row["mean_error"]
        rounding = row["rounding"]
        codes = (f"{rounding['codes_ours_scale']} / {rounding['codes_minmax']} of "
                 f"{rounding['codes']}" + (" (GPTQ)" if row["gptq"] else ""))
        table.append((
            row["output"], str(row["groups"]),
            f"{modules.get('int8', 0)}/{modules.get('int4', 0)}",
            f"{row['decode_gap']:.3g}", f"{row['validate_gap']:.2g}",
            "/".join(f"{errors[k]:.4f}" if k in errors else "-" for k in ("int8", "int4")),
            codes, f"{rounding['scales_differ']}/{rounding['scales']}", str(row["problems"])))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print("\npack-quantized conformance (compressed-tensors PackedQuantizationCompressor):")
    for index, line in enumerate(table):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))
    return 1 if not rows or any(row["problems"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
