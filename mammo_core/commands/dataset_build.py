"""`mammo dataset build-mias` and `mammo dataset build-cbis`: real mammograms -> patch arrays
in the CBIS-DDSM layout (train_/public_test_ tensors and labels, metadata.csv, skipped.csv,
build.json, one contact sheet PNG per class)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mammo_core import DISCLAIMER
from mammo_core.cliargs import integer
from mammo_core.datasets.cbis import build_cbis, skip_summary
from mammo_core.datasets.mias import build_mias
from mammo_core.paths import path_arg


def _summary(kind: str, result, reasons) -> None:
    err = sys.stderr
    print(f"{kind}: wrote {result.out_dir} in {result.seconds:.1f} s ({DISCLAIMER})", file=err)
    for split, counts in result.counts.items():
        body = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(f"  {split}: {result.pairs[split]} pairs ({body})", file=err)
    print(f"  skipped: {len(result.skipped)} (details in {Path(result.out_dir) / 'skipped.csv'})",
          file=err)
    for reason, n in reasons.most_common():
        print(f"    {n:4d}  {reason}", file=err)
    for f in result.failures[:20]:
        print(f"  problem: {f}", file=err)
    if len(result.failures) > 20:
        print(f"  ... and {len(result.failures) - 20} more problems (skipped.csv)", file=err)


def _run_mias(args: argparse.Namespace) -> int:
    result = build_mias(args.images, args.info, args.out, test_fraction=args.test_fraction,
                        seed=args.seed, jitter=args.jitter, progress=not args.no_progress,
                        extra_baselines=args.extra_baselines)
    _summary("build-mias", result, result.skip_reasons)
    return 3 if result.failures else 0


def _run_cbis(args: argparse.Namespace) -> int:
    result = build_cbis(args.root, args.out, progress=not args.no_progress)
    _summary("build-cbis", result, skip_summary(result.skipped))
    return 3 if result.failures else 0


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def _count(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build-mias", help="cut mini-MIAS mammograms into patch arrays (reference protocol v1)",
        description=(
            "Cut every mass / calcification of mini-MIAS (PGM or PNG images + Info.txt) into a "
            "baseline/abnormality pair of 150x150 uint16 patches by the reference patch protocol "
            "v1, split by woman (stratified by class, reproducible from --seed) and write "
            "train_/public_test_ tensors and labels, metadata.csv, skipped.csv, build.json and a "
            "contact sheet per class into --out. ARCH/ASYM and rows without coordinates are "
            "reported as skipped. Exit 3 when some images were missing or unreadable."),
        epilog="Data: J Suckling et al. 1994, MIAS licence (research use only). " + DISCLAIMER)
    p.add_argument("--images", required=True, type=path_arg, help="folder of mdbNNN.pgm / .png images")
    p.add_argument("--info", required=True, type=path_arg, help="the MIAS Info.txt ground-truth file")
    p.add_argument("--out", required=True, type=path_arg, help="output folder (created; files replaced)")
    p.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="share of pairs (by woman, per class) in public_test_* (default 0.2; 0 = all train)")
    p.add_argument("--seed", type=integer(0, 2**32 - 1), default=0, help="seed of the split and the jitter (default 0)")
    p.add_argument("--jitter", type=_count, default=0, metavar="K",
                   help="K extra jittered pairs per TRAIN abnormality (centre moved inside the lesion "
                        "circle, side x0.85-1.2; metadata column 'jitter' = 1..K); test pairs never (default 0)")
    p.add_argument("--extra-baselines", type=_count, default=0, metavar="K",
                   help="up to K extra baseline windows (>= 90%% tissue, sides like the lesion windows, "
                        "away from lesions) per mammogram of a TRAIN woman, normal ones included; "
                        "role 'extra_baseline' in metadata.csv; test split untouched (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_mias)

    c = subparsers.add_parser(
        "build-cbis", help="cut the CBIS-DDSM release (CSVs + DICOMs) into patch arrays",
        description=(
            "Read the four CBIS-DDSM case-description CSVs and the DICOM tree as downloaded from "
            "TCIA (paths in the CSVs are resolved by folder and DICOM content), cut each "
            "abnormality at its ROI mask's bounding box plus an adjacent baseline window of the "
            "same size, resize both to 150x150 (INTER_NEAREST, 16-bit kept) and write the "
            "official train/test split as train_/public_test_ arrays with metadata.csv, "
            "skipped.csv and contact sheets. Missing or unreadable files are reported and "
            "skipped (exit 3)."),
        epilog=DISCLAIMER)
    c.add_argument("--root", required=True, type=path_arg, help="folder with the CSVs and the DICOM tree")
    c.add_argument("--out", required=True, type=path_arg, help="output folder (created; files replaced)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_run_cbis)
