"""The training-augmentation decision bench (issue 24 item 3): each chosen pooled member searched
as it ships and with ``--train-augment acquisition``, both scored out of fold (the members' own
5 folds of the training women) under every acquisition shift of ``mammo_core.shifts``, in one
run. Never touches public_test. Method: ``mammo_core.training.augment_eval``.

    python benchmarks/augment_bench.py --data data/mias \
        [--members vgg16b4_baseline_mass_calc ...] [--augment-views N ...] [--every 1] \
        [--weights ../shared/weights/vgg16_imagenet_notop.weights.h5] [--json runs/augment_bench.json]

The rule (docs/robust_inputs.md, written before the bench was first run): keep the augmentation for
a member when its worst-shift AUC (abnormal vs baseline for ``vgg16b4_baseline_mass_calc``; the
member's own question for the others) rises and its unshifted AUC drops by no more than 0.005.
Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe
from mammo_core.paths import shared_dir
from mammo_core.shifts import ACQUISITION_RANGES, AUGMENTS, SHIFT_NAMES, SHIFTS
from mammo_core.training.augment_eval import compare_member, table_markdown
from mammo_core.training.nested import BUNDLED_SEARCHES

NAMES = tuple(s.name for s in BUNDLED_SEARCHES)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--members", nargs="+", default=[NAMES[0]], choices=NAMES)
    p.add_argument("--augment-views", nargs="+", type=int, default=[1],
                   help="augmented training views per member (one number for all, or one per member)")
    p.add_argument("--augment-train-views", nargs="+", type=int, default=None,
                   help="training views per patch of the augmented configuration (default each member's own; "
                        "one number for all, or one per member)")
    p.add_argument("--augment", choices=AUGMENTS[1:], default="acquisition",
                   help="the augmented configuration's --train-augment (default acquisition)")
    p.add_argument("--feature-squash", type=float, default=None, metavar="K",
                   help="the augmented configuration's --feature-squash (default each member's own)")
    p.add_argument("--weights", type=Path, default=shared_dir() / "weights" / "vgg16_imagenet_notop.weights.h5")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--shifts", nargs="+", default=list(SHIFT_NAMES), choices=SHIFT_NAMES)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=1, help="score the patches of every K-th pair only")
    p.add_argument("--json", type=Path, default=None, help="write the full result here")
    a = p.parse_args(argv)
    if "none" not in a.shifts:
        p.error("--shifts must include none (the unshifted row the rule reads)")
    views = a.augment_views if len(a.augment_views) == len(a.members) else a.augment_views[:1] * len(a.members)
    if len(a.augment_views) not in (1, len(a.members)):
        p.error("--augment-views: one number, or one per member")
    atv = a.augment_train_views or [0]
    if len(atv) not in (1, len(a.members)):
        p.error("--augment-train-views: one number, or one per member")
    atv = atv if len(atv) == len(a.members) else atv[:1] * len(a.members)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    shifted: dict = {}
    results: list = []
    print("Research use only — not a medical device.")
    for name, n_aug, n_tv in zip(a.members, views, atv):
        search = next(s for s in BUNDLED_SEARCHES if s.name == name)
        try:
            r = compare_member(search, a.data, a.weights, n_aug, a.shifts, a.folds, a.seed, a.every, a.cache, say,
                               shifted, n_tv or None, a.augment, a.feature_squash)
        except MammoError as err:
            print(f"augment_bench.py: error: {err}", file=sys.stderr)
            return 1
        results.append(r)
        d = r["decision"]
        print(f"\n{r['member']}: {r['n']} of {r['n_train']} training patches (every {r['every']}), out of fold "
              f"({r['folds']} folds grouped by woman), identity view; {r['seconds']:.0f} s")
        for c, cfg in r["configs"].items():
            print(f"  {c}: --train-views {cfg['train_views']} --train-augment {cfg['train_augment']} "
                  f"(augmented views {cfg['augment_views']}) --feature-squash {cfg['feature_squash']:g}, chose "
                  f"{cfg['chosen']['pool']} C={cfg['chosen']['C']:g} tta={cfg['chosen']['tta']}")
        print(table_markdown(r))
        print(f"rule ({d['question']}): unshifted {d['unshifted']['current']:.3f} -> "
              f"{d['unshifted']['augmented']:.3f}, "
              f"worst {d['worst']['current']['shift']} {d['worst']['current']['auc']:.3f} -> "
              f"{d['worst']['augmented']['shift']} {d['worst']['augmented']['auc']:.3f}: "
              f"{'KEEP' if d['keep'] else 'DROP'} the augmentation", flush=True)
        none_row = next(row for row in r["rows"] if row["shift"] == "none")
        lo, hi = none_row["delta_ci95"][d["question"]]
        print(f"  unshifted, augmented minus current: {d['unshifted']['augmented'] - d['unshifted']['current']:+.3f} "
              f"(95 % interval over women {lo:+.3f} to {hi:+.3f})")
        for c, (lo, hi) in d.get("gap_ci95", {}).items():
            print(f"  {c}: worst shift minus unshifted {d['worst'][c]['auc'] - d['unshifted'][c]:+.3f} "
                  f"(95 % interval over women {lo:+.3f} to {hi:+.3f})", flush=True)
        if a.json is not None:  # after every member, so a long run leaves its finished members
            a.json.parent.mkdir(parents=True, exist_ok=True)
            doc = {"command": " ".join(["benchmarks/augment_bench.py",
                                        *(argv if argv is not None else sys.argv[1:])]),
                   "shifts": {s.name: s.description for s in SHIFTS if s.name in a.shifts},
                   "acquisition_ranges": ACQUISITION_RANGES, "members": results}
            a.json.write_text(json.dumps(json_safe(doc), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
