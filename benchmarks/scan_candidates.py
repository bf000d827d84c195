"""How often the abnormality map's candidates hit the dev images' lesions.

For every mini-MIAS image in the dev copy (../shared/data/mini-mias) with at least one lesion
with coordinates, run ``mammo_core.scan.scan_mammogram`` with the bundled models and count a
lesion as found when one of the image's top-3 (and top-1, top-10) candidates has its window
centre within the lesion's radius (RADIUS of Info.txt, at least 48 px = half the smallest
window). Prints the fractions per lesion class and the settings. The bundled models were
trained on part of these images (their train split), so this is a development measure, not an
independent one.

    python benchmarks/scan_candidates.py [--limit N] [--map-members fastest|all] [--stride 0.25]
        [--json rows.json] [--held-out-from data/mias]
    python benchmarks/scan_candidates.py --from-json rows.json --held-out-from data/mias

``--held-out-from`` (a folder built by ``mammo dataset build-mias``) also prints the fractions
on the images of its held-out women (``public_test`` in its metadata.csv: no model trained on
them) and on the others; ``--from-json`` summarises a saved run without scanning again.
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
        summarise(json.loads(args.from_json.read_text()), held_out)
        return 0

    info = parse_info(args.data / "Info.txt")
    by_image = defaultdict(list)
    for les in info.lesions:
        if les.x is not None and (args.data / f"{les.image}.png").is_file():
            by_image[les.image].append(les)
    images = sorted(by_image)
    if args.limit:
        images = images[: args.limit]
    session = Session(args.models_dir, EngineSettings(args.engine))
    failures = session.load(["ensemble"])
    if failures:
        print("; ".join(map(str, failures)), file=sys.stderr)
        return 1
    settings = ScanSettings(stride_fraction=args.stride, min_tissue=args.min_tissue,
                            members=args.map_members, mask_level=args.mask_level,
                            rescore=args.rescore, map_precision=args.map_precision)
    rows = []
    t0 = time.perf_counter()
    for k, name in enumerate(images, 1):
        m = read_mammogram(args.data / f"{name}.png")
        res = scan_mammogram(m, session, settings)
        cands = [(c.y, c.x) for c in res.candidates]
        for les in by_image[name]:
            r, c = lesion_centre(les, m.shape)
            reach = max(int(les.radius), 48)
            d = [float(np.hypot(cy - r, cx - c)) for cy, cx in cands]
            hit = [i for i, v in enumerate(d) if v <= reach]
            rows.append({"image": name, "lesion": les.lesion_id, "class": les.cls,
                         "severity": les.severity, "radius": les.radius,
                         "first_hit_rank": (hit[0] + 1) if hit else None,
                         "windows": len(res.p_abnormal), "seconds": round(res.seconds, 2)})
        print(f"[{k}/{len(images)}] {name}: {len(res.p_abnormal)} windows, {res.seconds:.1f} s, "
              f"hits {[r_['first_hit_rank'] for r_ in rows if r_['image'] == name]}", file=sys.stderr)
    secs = time.perf_counter() - t0

    print(f"models: {', '.join(session.loaded)}; map members: {res.members} (exact={res.exact}); "
          f"map engine {res.map_engine['name']} {res.map_engine['precision']}, candidates "
          f"{res.engine['name']} {res.engine['precision']}")
    print(f"settings: window {res.window_px} px, stride {res.stride_px} px, min tissue "
          f"{settings.min_tissue}, mask {settings.mask_level}, rescore {settings.rescore}, "
          f"top-k {settings.top_k}; {len(images)} images in {secs:.0f} s")
    summarise(rows, held_out)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
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
