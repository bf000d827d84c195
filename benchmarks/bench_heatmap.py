#!/usr/bin/env python3
"""The ensemble heatmap's time, shared pass vs one Grad-CAM per member, in one run.

Loads the bundled models, predicts the bundled samples (as the viewer does before a heatmap is
asked for), then times ``Session.explain_all`` (the ensemble's default map) on ``--n`` samples,
``--rounds`` interleaved rounds, with the members' maps from one shared forward pass
(``explain.gradcam_shared``, the default) and with one Grad-CAM per member (the path before it);
prints the median milliseconds, the ratio, and the largest difference between the two maps over
every sample. Research use only — not a medical device.

    python benchmarks/bench_heatmap.py [--n 8] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import mammo_core.session as session_mod
from mammo_core import explain
from mammo_core.paths import samples_dir


def per_member(models, layers, x, idx):
    """One Grad-CAM per member (each its own forward pass)."""
    return [explain.gradcam(m, x, class_index=int(c), layer=layer) for m, layer, c in zip(models, layers, idx)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="samples timed per round")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    s = session_mod.Session()
    if s.load():
        print("bench_heatmap: bundled models failed to load", file=sys.stderr)
        return 1
    patches = s.read([samples_dir()]).patches
    s.predict(patches)
    paths = {"shared": explain.gradcam_shared, "per_member": per_member}
    for fn in paths.values():  # warm-up: tracing, TensorFlow, the Keras models
        session_mod.gradcam_shared = fn
        s.explain_all(patches[0])
    times: dict[str, list[float]] = {k: [] for k in paths}
    timed = patches[1:1 + args.n]
    for r in range(args.rounds):
        for name in list(paths)[r % 2:] + list(paths)[:r % 2]:
            session_mod.gradcam_shared = paths[name]
            for p in timed:
                t = time.perf_counter()
                s.explain_all(p)
                times[name].append(time.perf_counter() - t)
    dmax = 0.0
    for p in patches:
        maps = {}
        for name, fn in paths.items():
            session_mod.gradcam_shared = fn
            maps[name] = s.explain_all(p)
        dmax = max(dmax, max(float(np.abs(maps["shared"][k] - maps["per_member"][k]).max())
                             for k in maps["shared"]))
    session_mod.gradcam_shared = explain.gradcam_shared
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"cores={os.cpu_count()} load_1min={os.getloadavg()[0]:.1f} samples={len(timed)} rounds={args.rounds} "
          f"engine={s.engine_info().text()}")
    print(f"heatmap_shared_ms={med['shared']:.0f} heatmap_per_member_ms={med['per_member']:.0f} "
          f"ratio={med['per_member'] / med['shared']:.2f}x max_abs_map_difference={dmax:.1e} ({len(patches)} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
