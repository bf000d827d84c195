"""`mammo dataset info PATH`: what a CBIS-DDSM patch-array folder holds, validated."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mammo_core.io import load_patch_arrays, pairs_ok, pixel_range
from mammo_core.labels import CLASS_NAMES, class_counts
from mammo_core.paths import path_arg

LAYOUT_HELP = """\
expected layout (the CBIS-DDSM patch arrays of the study):
  PATH/train_tensor.npy          images (N, 150, 150) or (N, 150, 150, 1), uint16 or uint8
  PATH/train_labels.npy          labels (N,), integers 0-4
  PATH/public_test_tensor.npy    the same for the public test split
  PATH/public_test_labels.npy
  PATH/private_test_tensor.npy   optional; private_test_labels.npy optional too

labels: 0 baseline, 1 mass_benign, 2 mass_malignant, 3 calcification_benign,
4 calcification_malignant. Pair layout: each abnormality sits at an odd index with the
baseline patch of healthy tissue cut next to it at the even index before it ("pairs ok").
Arrays are read with allow_pickle=False (pickled/object arrays are refused) and memory-mapped.
Float images are accepted only when finite.

exit status: 0 ok, 1 bad input (one line naming the file and the problem)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="validate a patch-array folder and summarise its splits",
        description=(
            "Validate a CBIS-DDSM patch-array folder and print, per split, the number of\n"
            "patches, the count of each class, whether the baseline/abnormality pair layout\n"
            "holds, the dtype, patch shape and pixel range."
        ),
        epilog=LAYOUT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", type=path_arg, metavar="PATH", help="folder holding <split>_tensor.npy / <split>_labels.npy")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="output format (default: text)")
    p.set_defaults(func=run)


def dataset_summary(path: Path) -> dict:
    """The JSON document of `mammo dataset info` (raises DatasetError on bad input)."""
    arrays = load_patch_arrays(path)
    splits = {}
    for name, split in arrays.splits.items():
        lo, hi = pixel_range(split.images)
        labelled = split.labels is not None
        splits[name] = {
            "n": len(split),
            "classes": class_counts(split.labels) if labelled else None,
            "pairs_ok": pairs_ok(split.labels) if labelled else None,
            "dtype": str(split.images.dtype),
            "shape": [int(s) for s in split.images.shape[1:]],
            "min": lo,
            "max": hi,
        }
    return {"path": str(path), "splits": splits}


def _num(v) -> str:
    """A pixel value for the table: integers as they are, floats (in [0, 1]) to 4 decimals."""
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def format_text(summary: dict) -> str:
    splits = summary["splits"]
    names = list(splits)
    lines = [f"Patch arrays in {summary['path']}", ""]
    header = f"{'split':<14}{'patches':>9}  {'dtype':<8}{'shape':<10} {'min':>8} {'max':>8}  pairs"
    lines.append(header)
    lines.append("-" * len(header))
    for name in names:
        s = splits[name]
        pairs = "no labels" if s["pairs_ok"] is None else ("ok" if s["pairs_ok"] else "NOT ok")
        shape = "x".join(str(v) for v in s["shape"])
        lo, hi = _num(s["min"]), _num(s["max"])
        lines.append(f"{name:<14}{s['n']:>9}  {s['dtype']:<8}{shape:<10} {lo:>8} {hi:>8}  {pairs}")
    labelled = [n for n in names if splits[n]["classes"] is not None]
    if labelled:
        lines.append("")
        width = max(len(n) for n in labelled) + 2
        header = f"{'class':<25}" + "".join(f"{n:>{max(width, 9)}}" for n in labelled)
        lines.append(header)
        lines.append("-" * len(header))
        for cls in CLASS_NAMES:
            lines.append(f"{cls:<25}" + "".join(f"{splits[n]['classes'][cls]:>{max(width, 9)}}" for n in labelled))
    unlabelled = [n for n in names if splits[n]["classes"] is None]
    if unlabelled:
        lines.append("")
        lines.append("no labels: " + ", ".join(unlabelled))
    if any(splits[n]["pairs_ok"] is False for n in names):
        lines.append("")
        lines.append("warning: a split does not follow the baseline/abnormality pair layout "
                     "(baseline at even index, abnormality at the next odd index)")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    summary = dataset_summary(args.path)
    if args.format == "json":
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(format_text(summary))
    return 0
