"""Nested out-of-fold AUCs of the bundled pooled members and their ensemble, beside the old
(non-nested) ones, per question, with 95 % intervals over women (issue 24 item 2; method:
``mammo_core.training.nested``).

    MAMMO_FEATURE_CACHE=runs/feature_cache python benchmarks/nested_oof.py --data data/mias \
        --weights ../shared/weights/vgg16_imagenet_notop.weights.h5 --out runs/nested_oof

Reads the cached pooled VGG16 features of the training split and refuses to run when any view is
missing (it never computes features). Each member's result is saved as ``<out>/<member>.npz``
(a rerun reuses it); ``<out>/nested_oof.json`` and ``<out>/nested_oof.md`` hold the table.
Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mammo_core import DISCLAIMER, io
from mammo_core.datasets.splits import groups_for_arrays
from mammo_core.ensemble_fit import TASK_AUCS
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe
from mammo_core.models.transfer import pooled_keys
from mammo_core.shifts import AUGMENTS
from mammo_core.training.features import ALL_POOL_LAYERS, cache_root, cached_features, data_key
from mammo_core.training.nested import (
    BUNDLED_SEARCHES,
    MemberNested,
    nested_ensemble,
    nested_member,
    old_ensemble,
    question_aucs,
)
from mammo_core.training.pooled import OOF_FILE, augmented_features, load_oof, training_views, woman_folds

VIEWS = 8
QUESTIONS = dict(zip(TASK_AUCS, ("abnormal vs baseline", "mass vs calcification", "benign vs malignant")))


def _load_saved(path: Path, name: str, task: str, search: str) -> MemberNested | None:
    """The member's saved result when it was made by the same search (else None: rerun)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if "search" not in z.files or str(z["search"]) != search:
            return None
        old_choice = (str(z["old_choice"][0]), float(z["old_choice"][1]), str(z["old_choice"][2]))
        choices = tuple((str(a), float(b), str(c)) for a, b, c in z["choices"])
        return MemberNested(name, task, z["nested"], z["old"], old_choice, choices, z["inner_oof"])


def _save(path: Path, m: MemberNested, search: str) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, search=np.array(search), nested=m.nested, old=m.old, inner_oof=m.inner_oof,
             old_choice=np.array([str(x) for x in m.old_choice]),
             choices=np.array([[str(x) for x in c] for c in m.choices]))
    os.replace(tmp, path)


def _fmt(row: dict, key: str) -> str:
    v = row[key]
    if not isinstance(v, float) or not math.isfinite(v):
        return "—"
    lo, hi = row[key + "_ci95"]
    return f"{v:.3f} ({lo:.2f}–{hi:.2f})"


def markdown(rows: list[dict]) -> str:
    head = "| model | figure | " + " | ".join(QUESTIONS.values()) + " |"
    lines = [head, "|" + "---|" * (2 + len(QUESTIONS))]
    for r in rows:
        lines.append(f"| {r['model']} | {r['figure']} | " + " | ".join(_fmt(r, k) for k in QUESTIONS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="patch-array folder (train_*, metadata.csv)")
    p.add_argument("--weights", type=Path, required=True, help="the VGG16 weights the features were cached with")
    p.add_argument("--cache", type=Path, default=None, help="feature cache (default $MAMMO_FEATURE_CACHE)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--members", nargs="+", default=[s.name for s in reversed(BUNDLED_SEARCHES)],
                   choices=[s.name for s in BUNDLED_SEARCHES], help="members to run, in this order "
                   "(default: all, the quicker two-class ones first)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--feature-squash", nargs="+", default=[], metavar="MEMBER=K",
                   help="run MEMBER's search with --feature-squash K instead of its bundled value (to compare "
                        "a configuration before it ships; use another --out)")
    p.add_argument("--pool-candidates", nargs="+", default=[], metavar="MEMBER=CANDIDATE",
                   help="run MEMBER's search over these pool candidates instead of its bundled ones (repeat "
                        "MEMBER=... once per candidate, e.g. MEMBER=block3_pool,block4_pool:avgmax)")
    p.add_argument("--train-augment", nargs="+", default=[], metavar="MEMBER=KIND,VIEWS,TRAIN_VIEWS",
                   help="run MEMBER's search with --train-augment KIND --augment-views VIEWS --train-views "
                        "TRAIN_VIEWS instead of its bundled ones")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--member-runs", type=Path, default=None,
                   help="folder of the members' training runs (<name>/oof.npz): check that the old figure's "
                        "predictions reproduce theirs")
    a = p.parse_args(argv)
    squash = {}
    for item in a.feature_squash:
        name, _, k = item.partition("=")
        if name not in {s.name for s in BUNDLED_SEARCHES} or not k:
            p.error(f"--feature-squash {item!r}: give MEMBER=K with a bundled member")
        try:
            squash[name] = float(k)
        except ValueError:
            p.error(f"--feature-squash {item!r}: K must be a number")
    cands: dict[str, list[str]] = {}
    for item in a.pool_candidates:
        name, _, cand = item.partition("=")
        if name not in {s.name for s in BUNDLED_SEARCHES} or not cand:
            p.error(f"--pool-candidates {item!r}: give MEMBER=CANDIDATE with a bundled member")
        cands.setdefault(name, []).append(cand)
    augs: dict[str, dict] = {}
    for item in a.train_augment:
        name, _, spec = item.partition("=")
        parts = spec.split(",")
        if (name not in {s.name for s in BUNDLED_SEARCHES} or len(parts) != 3 or parts[0] not in AUGMENTS[1:]
                or not all(parts[1:])):
            p.error(f"--train-augment {item!r}: give MEMBER=KIND,VIEWS,TRAIN_VIEWS with a bundled member")
        try:
            augs[name] = {"train_augment": parts[0], "augment_views": int(parts[1]), "train_views": int(parts[2])}
        except ValueError:
            p.error(f"--train-augment {item!r}: VIEWS and TRAIN_VIEWS must be whole numbers")
    searches = [dataclasses.replace(s, feature_squash=squash.get(s.name, s.feature_squash),
                                    candidates=tuple(cands.get(s.name, s.candidates)), **augs.get(s.name, {}))
                for s in BUNDLED_SEARCHES]
    say = lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    try:
        arrays = io.load_patch_arrays(a.data)
        train = arrays.splits["train"]
        root = cache_root(a.cache) / data_key(train.image_file, a.weights) / "train"
        missing = [str(root / f"view{v}" / f"{k}.npy") for v in range(VIEWS)
                   for k in pooled_keys(ALL_POOL_LAYERS, "avgmax") if not (root / f"view{v}" / f"{k}.npy").is_file()]
        if missing:
            raise MammoError(f"{len(missing)} cached feature files missing (this script never computes "
                             f"features), e.g. {missing[0]}", root)
        labels = np.asarray(train.labels, np.int64)
        groups = groups_for_arrays(a.data, split="train")
        feats = cached_features(np.empty((len(labels), 0)), train.image_file, "train", a.weights, VIEWS, a.cache)
    except MammoError as err:
        print(f"nested_oof.py: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a missing / unreadable data or weights file (safeio.UnsafeFile is one)
        print(f"nested_oof.py: error: {a.weights if not Path(a.weights).is_file() else a.data}: {err}",
              file=sys.stderr)
        return 1
    fold = woman_folds(labels, groups, a.folds, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    members = []
    for s in sorted((s for s in searches if s.name in a.members), key=lambda s: a.members.index(s.name)):
        path = a.out / f"{s.name}.npz"
        m = _load_saved(path, s.name, s.task, repr(s))
        if m is None:
            t = time.perf_counter()
            tv = training_views(len(labels), VIEWS, s.train_views, a.seed)
            aug = None
            if s.train_augment != "none":  # the member's acquisition-changed training views (cached)
                x = io.to_model_input(np.asarray(train.images))
                aug = augmented_features(s.train_augment, s.augment_views, x, train.image_file, "train", a.weights,
                                         tv, a.seed, a.cache)
            m = nested_member(s, feats, labels, fold, tv, a.seed, progress=say, aug_feats=aug)
            _save(path, m, repr(s))
            say(f"{s.name}: {time.perf_counter() - t:.0f} s")
        members.append(m)
    rows, per_fold = [], {}
    for m in members:
        for fig, prob in (("old (non-nested)", m.old), ("nested", m.nested)):
            rows.append({"model": m.name, "figure": fig,
                         **question_aucs(m.task, prob, labels, groups, a.n_boot, a.seed)})
        per_fold[m.name] = {"old_choice": m.old_choice, "nested_choices": m.choices}
        if a.member_runs is not None and (a.member_runs / m.name / OOF_FILE).is_file():
            z = load_oof(a.member_runs / m.name)
            same = z["probabilities"].shape == m.old.shape and np.array_equal(z["labels"], labels)
            per_fold[m.name]["old_vs_member_run_max_abs_diff"] = (
                float(np.abs(z["probabilities"] - m.old).max()) if same else "other data")
    ens = None
    if len(members) == len(BUNDLED_SEARCHES):
        p_old = old_ensemble(members, labels)
        p_nested, ens = nested_ensemble(members, labels, fold)
        for fig, prob in (("old (non-nested)", p_old), ("nested", p_nested)):
            rows.append({"model": "ensemble", "figure": fig,
                         **question_aucs("five_class", prob, labels, groups, a.n_boot, a.seed)})
    table = markdown(rows)
    doc = {"data": str(a.data.resolve()), "n_patches": len(labels), "n_women": len(np.unique(groups)),
           "outer_folds": a.folds, "inner_folds": a.folds - 1, "seed": a.seed, "n_boot": a.n_boot,
           "searches": [vars(s) for s in searches if s.name in a.members],
           "choices": per_fold, "ensemble_per_fold": ens, "rows": rows, "table_markdown": table,
           "command": " ".join(["benchmarks/nested_oof.py", *(sys.argv[1:] if argv is None else argv)]),
           "seconds": round(time.perf_counter() - t0, 1), "disclaimer": DISCLAIMER}
    (a.out / "nested_oof.json").write_text(json.dumps(json_safe(doc), indent=2) + "\n")
    (a.out / "nested_oof.md").write_text(f"{DISCLAIMER}\n\n{table}\n")
    print(f"{DISCLAIMER}.\n{len(labels)} training patches, {len(np.unique(groups))} women, "
          f"{a.folds} outer folds grouped by woman; AUC (95 % interval over women)")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
