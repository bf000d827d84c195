"""The acquisition-shift bench: the bundled members and their ensemble scored out of fold on the
training patches under the documented shifts of ``mammo_core.shifts`` (gamma 0.5 / 2, contrast
x0.6, Gaussian noise at SNR 20 dB, blur sigma 1 px, re-quantisation to 10 and 12 bits, a
film-edge strip, rescale 0.8 / 1.25), beside the unshifted row, with the OOD warning rate per
shift (it should rise where the AUC falls), and the unshifted patches' warning rates (false
warnings) over every training patch out of fold and on public_test. Method: ``mammo_core.training.shift_eval``.

    python benchmarks/shift_bench.py --data data/mias --oof runs/bundled \
        [--models assets/models] [--weights ../shared/weights/vgg16_imagenet_notop.weights.h5] \
        [--shifts none gamma_0.5 ...] [--json runs/shift_bench.json]

``--oof``: the folder holding each member's run folder with its ``oof.npz`` (the folds, grouped
by woman); the unshifted features come from the feature cache (``$MAMMO_FEATURE_CACHE``, default
``runs/feature_cache``). Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammo_core.jsonutil import json_safe
from mammo_core.paths import models_dir, shared_dir
from mammo_core.shifts import SHIFT_NAMES, SHIFTS
from mammo_core.training.shift_eval import evaluate_shifts, false_warning_markdown, table_markdown


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--oof", type=Path, required=True, help="folder of the members' run folders (oof.npz)")
    p.add_argument("--models", type=Path, default=models_dir())
    p.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "vgg16_imagenet_notop.weights.h5")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--shifts", nargs="+", default=list(SHIFT_NAMES), choices=SHIFT_NAMES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=1,
                   help="score the patches of every K-th pair only (heads still fitted on all other folds)")
    p.add_argument("--json", type=Path, default=None, help="write the full result here")
    a = p.parse_args(argv)
    res = evaluate_shifts(a.data, a.models, a.oof, a.weights, a.shifts, a.cache, a.seed,
                          progress=lambda m: print(m, file=sys.stderr, flush=True), every=a.every)
    res["shifts"] = {s.name: s.description for s in SHIFTS if s.name in a.shifts}
    print("Research use only — not a medical device.")
    print(f"{res['n']} of {res['n_train']} training patches (every {res['every']}), "
          f"out of fold ({res['folds']} folds grouped by woman), "
          f"identity view; ensemble {res['ensemble_sha256'][:12]}; {res['seconds']:.0f} s")
    print(table_markdown(res))
    print()
    print("False warnings (unshifted patches):")
    print(false_warning_markdown(res))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(json_safe(res), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
