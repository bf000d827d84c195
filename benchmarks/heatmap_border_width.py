"""Choose the heatmap's edge damping width (``explain.EDGE_DAMP_PX``) on TRAINING women's
patches, not on the bundled samples (held-out women, which the slow test then checks).

Issue 22 asks that the default heatmap's 15-px border hold no more heat than the border's share
of the tissue. ``benchmarks/heatmap_border.py`` found no artefact to remove (padding, the pooled
head and the resize are not the cause; docs/trust.md), so the remaining lever is the display's
damping beside the patch's frame and masked film background. Its width is chosen here by a rule
fixed before this script was first run:

    EDGE_DAMP_PX = the smallest of 8, 12, 16 px (one, one and a half, two block4_conv3 cells)
    for which at most 1 % of these training patches have a border share of the heat above the
    border's share of their tissue + 0.005; 16 px if none does.

Data: ``--n`` patches of the build's ``train`` split drawn at random (seed 0) (the bundled members' training
women; the members saw these patches, so the maps are in-sample for their heads: a display
parameter, not a performance claim). Maps: the product's own path (``Session.explain``, the
ensemble's default target = the most likely abnormal class), one per width. Also printed: the
heat's share in the central disc of radius 37 px (lesion patches are cut centred on the lesion,
so a width that moves heat off the lesion shows there), and how many maps peak in the border.

    python benchmarks/heatmap_border_width.py [--data data/mias] [--n 292] [--json OUT]

Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

WIDTHS = (8, 12, 16)
ALLOWANCE = 0.005
MAX_OVER_RATE = 0.01
RING = 15


def ring_and_disc() -> tuple[np.ndarray, np.ndarray]:
    ring = np.zeros((150, 150), bool)
    ring[:RING] = ring[-RING:] = True
    ring[:, :RING] = ring[:, -RING:] = True
    yy, xx = np.mgrid[:150, :150]
    disc = (yy - 74.5) ** 2 + (xx - 74.5) ** 2 <= 37 ** 2
    return ring, disc


def choose(rates: dict[int, float]) -> int:
    """The rule in the module docstring."""
    for w in WIDTHS:
        if rates[w] <= MAX_OVER_RATE:
            return w
    return WIDTHS[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/mias"))
    p.add_argument("--n", type=int, default=292)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    from mammo_core import explain
    from mammo_core.explain import tissue_mask
    from mammo_core.io import to_model_input
    from mammo_core.session import Session

    s = Session()
    errors = s.load(["ensemble"])
    if errors:
        print("; ".join(map(str, errors)), file=sys.stderr)
        return 1
    read = s.read([a.data / "train_tensor.npy"])
    pick = np.sort(np.random.default_rng(0).permutation(len(read.patches))[:a.n])
    patches = [read.patches[i] for i in pick]
    labels = np.asarray([q.label if q.label is not None else -1 for q in patches])
    print(f"{len(patches)} of {len(read.patches)} training patches (random, seed 0); "
          f"labels {np.bincount(labels[labels >= 0], minlength=5).tolist()}", flush=True)
    t0 = time.perf_counter()
    s.predict(patches)  # member probabilities once, kept by the session for explain()
    print(f"predict {time.perf_counter() - t0:.0f} s", flush=True)

    ring, disc = ring_and_disc()
    area = np.empty(len(patches))
    share = {w: np.empty(len(patches)) for w in WIDTHS}
    centre = {w: np.empty(len(patches)) for w in WIDTHS}
    peak_ring = {w: 0 for w in WIDTHS}
    t0 = time.perf_counter()
    for i, q in enumerate(patches):
        t = tissue_mask(to_model_input(q)[0])
        area[i] = (ring & t).sum() / max(t.sum(), 1)
        for w in WIDTHS:
            explain.EDGE_DAMP_PX = w
            hm = s.explain(q)
            tot = float(hm.sum())
            share[w][i] = hm[ring].sum() / tot if tot > 0 else 0.0
            centre[w][i] = hm[disc].sum() / tot if tot > 0 else 0.0
            peak_ring[w] += bool(tot > 0 and ring.flat[int(np.argmax(hm))])
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(patches)} maps, {time.perf_counter() - t0:.0f} s", flush=True)

    lesion = labels > 0
    rates = {w: float(np.mean(share[w] > area + ALLOWANCE)) for w in WIDTHS}
    print("\n| damping width | border share of heat: median [5th, 95th pct] | patches over their "
          "tissue share + 0.005 | maps peaking in the 15-px border | lesion patches: heat in the "
          "central disc (r 37 px), median |")
    print("|---|---|---|---|---|")
    rows = {}
    for w in WIDTHS:
        q5, q50, q95 = np.percentile(share[w], [5, 50, 95])
        over = int(np.sum(share[w] > area + ALLOWANCE))
        c = float(np.median(centre[w][lesion])) if lesion.any() else float("nan")
        print(f"| {w} px | {q50:.3f} [{q5:.3f}, {q95:.3f}] | {over} of {len(patches)} "
              f"({100 * rates[w]:.1f} %) | {peak_ring[w]} | {c:.3f} |")
        rows[w] = {"median_share": q50, "p5": q5, "p95": q95, "over": over, "rate": rates[w],
                   "peak_in_border": peak_ring[w], "lesion_centre_share_median": c}
    chosen = choose(rates)
    print(f"\nborder's share of the tissue: median {np.median(area):.3f}; rule -> EDGE_DAMP_PX = {chosen}")
    if a.json:
        a.json.write_text(json.dumps({"n": len(patches), "seed": 0, "rows": rows,
                                      "chosen": chosen}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
