"""How often the abnormality map's candidates hit the dev images' lesions.

For every mini-MIAS image in the dev copy (../shared/data/mini-mias) with at least one lesion
with coordinates, run ``mammo_core.scan.scan_mammogram`` with the bundled models and count a
lesion as found when one of the image's top-3 (and top-1, top-10) candidates has its window
centre within the lesion's radius (RADIUS of Info.txt, at least 48 px = half the smallest
window). Prints the fractions per lesion class and the settings. The bundled models were
trained on part of these images (their train split), so this is a development measure, not an
independent one.

    python benchmarks/scan_candidates.py [--limit N] [--every K] [--map-members fastest|all]
        [--stride 0.25] [--map-modes windowed,dense] [--json rows.json] [--held-out-from data/mias]
    python benchmarks/scan_candidates.py --from-json rows.json --held-out-from data/mias

``--held-out-from`` (a folder built by ``mammo dataset build-mias``) also prints the fractions
on the images of its held-out women (``public_test`` in its metadata.csv: no model trained on
them) and on the others; ``--from-json`` summarises a saved run without scanning again.

``--map-modes windowed,dense`` scans every image with each map mode (``ScanSettings.map_mode``)
in turn, in this one run; an entry ``MODE:PRECISION`` also sets the map's precision
(``windowed:f32,windowed:bf16``: issue 23's rule that the map may use bf16 only when its top-3
hit rate is not lower than f32's in the same run), and prints the hit fractions per mode, the map pass and scan times
per mode and their ratio, and the per-window P(abnormal) differences between the first two
modes (max, mean, correlation; same windows in both).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammo_core.datasets.mias import lesion_centre, parse_info
from mammo_core.engine import EngineSettings
from mammo_core.mammogram import read_mammogram
from mammo_core.paths import shared_dir
from mammo_core.scan import ScanSettings, scan_mammogram
from mammo_core.session import Session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared_dir() / "data" / "mini-mias")
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--limit", type=int, default=0, help="first N images with lesions (0: all)")
    ap.add_argument("--every", type=int, default=1,
                    help="every K-th image with lesions (evenly spaced subset; default 1: all)")
    ap.add_argument("--map-modes", default="windowed", metavar="MODE[:PRECISION][,...]",
                    help="map modes to compare in this run, in this order per image "
                         "(windowed, dense, each optionally :f32 or :bf16 for the map; default windowed)")
    ap.add_argument("--map-members", default="fastest")
    ap.add_argument("--stride", type=float, default=0.25)
    ap.add_argument("--min-tissue", type=float, default=0.9)
    ap.add_argument("--mask-level", default="otsu")
    ap.add_argument("--rescore", type=int, default=ScanSettings().rescore)
    ap.add_argument("--engine", choices=("auto", "keras", "openvino"), default="auto",
                    help="engine of the map and candidates (mammo_core/engine)")
    ap.add_argument("--map-precision", choices=("f32", "bf16"), default=None,
                    help="precision of the map pass on OpenVINO (default: MAP_PRECISION)")
    ap.add_argument("--json", type=Path, default=None, help="write the per-lesion results here")
    ap.add_argument("--from-json", type=Path, default=None, help="summarise these saved per-lesion results")
    ap.add_argument("--held-out-from", type=Path, default=None,
                    help="built mini-MIAS folder: also summarise its held-out women's images apart")
    args = ap.parse_args(argv)
    held_out = held_out_images(args.held_out_from) if args.held_out_from else None
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows_ = saved["rows"] if isinstance(saved, dict) else saved
        for mode in sorted({r_.get("requested_mode", "windowed") for r_ in rows_}):
            print(f"== map mode {mode}")
            summarise([r_ for r_ in rows_ if r_.get("requested_mode", "windowed") == mode], held_out)
        return 0

    info = parse_info(args.data / "Info.txt")
    by_image = defaultdict(list)
    for les in info.lesions:
        if les.x is not None and (args.data / f"{les.image}.png").is_file():
            by_image[les.image].append(les)
    images = sorted(by_image)[:: max(1, args.every)]
    if args.limit:
        images = images[: args.limit]
    modes = [m.strip() for m in args.map_modes.split(",") if m.strip()]
    session = Session(args.models_dir, EngineSettings(args.engine))
    failures = session.load(["ensemble"])
    if failures:
        print("; ".join(map(str, failures)), file=sys.stderr)
        return 1
    settings = {mode: ScanSettings(stride_fraction=args.stride, min_tissue=args.min_tissue,
                                   members=args.map_members, mask_level=args.mask_level,
                                   rescore=args.rescore,
                                   map_precision=mode.partition(":")[2] or args.map_precision,
                                   map_mode=mode.partition(":")[0]) for mode in modes}
    spent = {"candidates": 0.0}
    predict = session.predict

    def timed_predict(*a, **k):  # the candidates' re-classification, timed apart from the map
        t = time.perf_counter()
        try:
            return predict(*a, **k)
        finally:
            spent["candidates"] += time.perf_counter() - t
    session.predict = timed_predict
    rows = []
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    diffs = []
    t0 = time.perf_counter()
    for k, name in enumerate(images, 1):
        m = read_mammogram(args.data / f"{name}.png")
        res_of = {}
        for mode in modes:
            spent["candidates"] = 0.0
            res = res_of[mode] = scan_mammogram(m, session, settings[mode])
            times[mode].append((res.seconds - spent["candidates"], res.seconds))
            cands = [(c.y, c.x) for c in res.candidates]
            for les in by_image[name]:
                r, c = lesion_centre(les, m.shape)
                reach = max(int(les.radius), 48)
                d = [float(np.hypot(cy - r, cx - c)) for cy, cx in cands]
                hit = [i for i, v in enumerate(d) if v <= reach]
                rows.append({"image": name, "lesion": les.lesion_id, "class": les.cls,
                             "severity": les.severity, "radius": les.radius, "mode": res.map_mode,
                             "requested_mode": mode,
                             "first_hit_rank": (hit[0] + 1) if hit else None,
                             "windows": len(res.p_abnormal), "seconds": round(res.seconds, 2),
                             "map_seconds": round(times[mode][-1][0], 2)})
            print(f"[{k}/{len(images)}] {name} {mode}: {len(res.p_abnormal)} windows, map "
                  f"{times[mode][-1][0]:.1f} s, scan {res.seconds:.1f} s, hits "
                  f"{[r_['first_hit_rank'] for r_ in rows if r_['image'] == name and r_['requested_mode'] == mode]}",
                  file=sys.stderr, flush=True)
        if len(modes) >= 2:
            a_, b_ = (res_of[x] for x in modes[:2])
            if np.array_equal(a_.centres, b_.centres) and len(a_.p_abnormal) > 1:
                dp = np.abs(a_.p_abnormal - b_.p_abnormal)
                diffs.append({"image": name, "max": float(dp.max()), "mean": float(dp.mean()),
                              "corr": float(np.corrcoef(a_.p_abnormal, b_.p_abnormal)[0, 1])})
        if args.json:  # after each image: a stopped run keeps what it measured
            args.json.write_text(json.dumps({"rows": rows, "diffs": diffs}, indent=1))
    secs = time.perf_counter() - t0

    print(f"models: {', '.join(session.loaded)}; map members: {res.members} (exact={res.exact}); "
          f"map engine {res.map_engine['name']} {res.map_engine['precision']}, candidates "
          f"{res.engine['name']} {res.engine['precision']}")
    print(f"settings: window {res.window_px} px, stride {res.stride_px} px, min tissue "
          f"{args.min_tissue}, mask {args.mask_level}, rescore {args.rescore}, "
          f"top-k {res.settings.top_k}; {len(images)} images x {len(modes)} map mode(s) in {secs:.0f} s")
    for mode in modes:
        mp = [t[0] for t in times[mode]]
        sc = [t[1] for t in times[mode]]
        used = sorted({r_["mode"] for r_ in rows if r_["requested_mode"] == mode})
        print(f"== map mode {mode} (used: {', '.join(used)}): map pass mean {np.mean(mp):.2f} s "
              f"(median {np.median(mp):.2f}), whole scan mean {np.mean(sc):.2f} s (median {np.median(sc):.2f})")
        summarise([r_ for r_ in rows if r_["requested_mode"] == mode], held_out)
    if len(modes) >= 2:
        m0, m1 = (np.array([t[0] for t in times[x]]) for x in modes[:2])
        s0, s1 = (np.array([t[1] for t in times[x]]) for x in modes[:2])
        print(f"ratio {modes[0]} / {modes[1]}: map pass {m0.sum() / max(m1.sum(), 1e-9):.2f}x "
              f"(per image median {np.median(m0 / np.maximum(m1, 1e-9)):.2f}x), whole scan "
              f"{s0.sum() / max(s1.sum(), 1e-9):.2f}x")
        if diffs:
            print(f"per-window |P(abnormal) {modes[0]} - {modes[1]}| over {len(diffs)} images: max "
                  f"{max(d['max'] for d in diffs):.3f}, mean of the per-image means "
                  f"{np.mean([d['mean'] for d in diffs]):.3f}, correlation median "
                  f"{np.median([d['corr'] for d in diffs]):.3f} (range {min(d['corr'] for d in diffs):.3f}"
                  f"-{max(d['corr'] for d in diffs):.3f})")
    return 0


def held_out_images(folder: Path) -> dict[str, set[str]]:
    """The mini-MIAS images of a built folder by split (``train`` / ``public_test``, the held-out
    women); images the build skipped (ARCH / ASYM only) are in neither."""
    out: dict[str, set[str]] = {"train": set(), "public_test": set()}
    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["split"], set()).add(r["image"])
    return out


def summarise(rows: list[dict], held_out: dict[str, set[str]] | None = None) -> None:
    """Print the top-1 / 3 / 10 hit fractions per lesion class (and on held-out images apart)."""
    def frac(sel, k):
        n = sum(1 for r_ in sel if r_["first_hit_rank"] is not None and r_["first_hit_rank"] <= k)
        return n, len(sel)

    sets = {"": rows}
    if held_out is not None:
        sets["held-out women's images: "] = [r_ for r_ in rows if r_["image"] in held_out["public_test"]]
        sets["training women's images: "] = [r_ for r_ in rows if r_["image"] in held_out["train"]
                                              and r_["image"] not in held_out["public_test"]]
        sets["images not in the build (ARCH/ASYM only): "] = [
            r_ for r_ in rows if r_["image"] not in held_out["train"] | held_out["public_test"]]
    for prefix, part in sets.items():
        groups = {"all lesions": part,
                  "masses (CIRC/SPIC/MISC)": [r_ for r_ in part if r_["class"] in ("CIRC", "SPIC", "MISC")],
                  "calcifications (CALC)": [r_ for r_ in part if r_["class"] == "CALC"],
                  "ARCH/ASYM": [r_ for r_ in part if r_["class"] in ("ARCH", "ASYM")]}
        for g, sel in groups.items():
            parts = []
            for k in (1, 3, 10):
                n, tot = frac(sel, k)
                parts.append(f"top-{k} {n}/{tot} = {n / tot:.2f}" if tot else f"top-{k} -")
            print(f"{prefix}{g}: " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
