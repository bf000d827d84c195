"""`mammo predict`: classify patches with bundled models / the ensemble, optional Grad-CAM,
report as JSON / CSV / PDF. Same code path as the viewer (mammo_core.session.Session)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path, atomic_write_bytes
from mammo_core.errors import MammoError
from mammo_core.explain import overlay
from mammo_core.io import read_patches
from mammo_core.report import PredictionRun, csv_text, json_text
from mammo_core.session import ENSEMBLE, Session

EPILOG = f"""\
examples:
  mammo predict patches/ -o report.json
  mammo predict a.png b.dcm stack.npy --model all --format csv
  mammo predict patches/ --model path/to/bundle --gradcam --gradcam-dir maps/ -o report.pdf --format pdf

PATH is any mix of patch files (.npy .png .tif .jpg .pgm .dcm), stacked .npy arrays (N,150,150)
and folders. Exit codes: 0 every input predicted, 1 bad input or model, 2 usage error,
3 some inputs could not be read (the rest were predicted and reported).
{DISCLAIMER}.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify patches (ensemble by default), optional Grad-CAM, JSON/CSV/PDF report",
        description="Classify 150x150 mammogram patches with bundled models and their ensemble. "
                    + DISCLAIMER.capitalize() + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="patch files, stacked .npy arrays, folders")
    p.add_argument("--model", default="ensemble", metavar="NAME|PATH|ensemble|all",
                   help="a bundled model's name, a bundle folder, 'ensemble' (default: the bundled "
                        "ensemble and its members) or 'all' (every bundle)")
    p.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                   help="folder of bundles (default: assets/models)")
    p.add_argument("--gradcam", action="store_true", help="compute Grad-CAM maps")
    p.add_argument("--gradcam-dir", type=Path, default=None, metavar="DIR",
                   help="write each map as .npy (float32 150x150 in [0,1]) and a PNG overlay "
                        "(implies --gradcam)")
    p.add_argument("--method", default="gradcam", choices=("gradcam", "gradcam++", "scorecam"),
                   help="heatmap method (default gradcam)")
    p.add_argument("--format", default="json", choices=("json", "csv", "pdf"),
                   help="report format (default json); pdf requires -o")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="report file (default: stdout for json/csv)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="patches per batch (default 32)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def _usage(msg: str) -> int:
    print(f"mammo predict: error: {msg}", file=sys.stderr)
    return 2


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s).strip("_") or "x"


def run(args) -> int:
    if args.format == "pdf" and args.output is None:
        return _usage("--format pdf requires -o FILE")
    if args.batch_size < 1:
        return _usage(f"--batch-size must be at least 1, got {args.batch_size}")
    gradcam = args.gradcam or args.gradcam_dir is not None

    from tqdm import tqdm


    session = Session(args.models_dir)
    coll = read_patches(args.paths, recursive=args.recursive)
    for e in coll.errors:
        print(f"mammo: cannot read {e.source}: {e.error}", file=sys.stderr)

    if args.model == "all":
        names = None
    else:
        names = [args.model]
        if args.model == ENSEMBLE and not session.available():
            raise MammoError("no model bundles found; train one (training_scripts/) or pass "
                             "--model PATH", session.models_dir)
    disable = args.no_progress
    with tqdm(total=0, desc="loading models", unit="model", file=sys.stderr, disable=disable,
              leave=False) as bar:
        def on_load(i, total, name):
            bar.total = total
            bar.n = i
            bar.set_postfix_str(name)
            bar.refresh()

        failures = session.load(names, progress=on_load)
    if failures:
        raise MammoError("; ".join(str(f) for f in failures))

    with tqdm(total=len(coll.patches), desc="predicting", unit="patch", file=sys.stderr,
              disable=disable) as bar:
        preds = session.predict(coll.patches, batch_size=args.batch_size,
                                progress=lambda done, total: bar.update(done - bar.n))

    heatmaps, heatmap_paths = {}, {}
    if gradcam:
        heatmaps, heatmap_paths = _gradcam(session, coll.patches, preds, args, disable)

    errors = list(coll.errors)
    if args.output is None:
        run_ = PredictionRun(preds, session.provenance(), errors, coll.patches, heatmaps, heatmap_paths)
        sys.stdout.write(json_text(run_) if args.format == "json" else csv_text(run_))
        sys.stdout.flush()
    else:
        session.export(args.output, args.format, coll.patches, preds, heatmaps, errors=errors,
                       heatmap_paths=heatmap_paths)
        print(f"mammo: wrote {args.output} ({len(preds)} patches, {len(errors)} unreadable); "
              f"{DISCLAIMER}", file=sys.stderr)
    if errors:
        return 3 if preds else 1
    return 0


def _gradcam(session, patches, preds, args, disable):
    import numpy as np
    from tqdm import tqdm


    ens_loaded = ENSEMBLE in session.loaded
    heatmaps, paths = {}, {}
    out_dir = args.gradcam_dir
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(patches), desc="Grad-CAM", unit="patch", file=sys.stderr, disable=disable) as bar:
        for i, (patch, pred) in enumerate(zip(patches, preds)):
            maps = {}
            if ens_loaded:
                maps.update(session.explain_all(patch, ENSEMBLE, args.method,
                                                target=pred.ensemble.predicted))
            for name in pred.per_model:
                if name not in maps:
                    maps.update(session.explain_all(patch, name, args.method))
            key = patch.key
            for model, hm in maps.items():
                model = session.model_name(model)
                heatmaps[(key, model)] = hm
                if out_dir is not None:
                    stem = f"{i:05d}_{_safe(Path(patch.source).stem)}"
                    if patch.index is not None:
                        stem += f"_{patch.index}"
                    stem += f"_{_safe(model)}"
                    npy = out_dir / f"{stem}.npy"
                    with atomic_path(npy) as tmp:
                        np.save(tmp, hm.astype(np.float32), allow_pickle=False)
                    _write_png(out_dir / f"{stem}.png", overlay(patch.pixels, hm))
                    paths[(key, model)] = str(npy)
            bar.update(1)
    return heatmaps, paths


def _write_png(path: Path, rgb) -> None:
    import cv2


    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    if not ok:
        raise MammoError("cannot encode PNG", path)
    atomic_write_bytes(path, buf.tobytes())
