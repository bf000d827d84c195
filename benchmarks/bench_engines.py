#!/usr/bin/env python3
"""Engines benchmark: speed and agreement of each engine/precision against Keras f32, one run.

Speed (default): the bundled members (``--members``, default all three, their identical VGG16
trunk computed once as in every prediction) on ``--n`` real patches (the bundled samples,
repeated), one view, batch ``--batch``; ``--rounds`` interleaved rounds (every configuration
once per round, the order rotated), median images/s per configuration and its ratio to Keras
f32 from the same rounds. Prints ``key=value`` lines.

Whole commands (``--cli``): ``mammo predict`` of the bundled samples (each card's TTA, the
ensemble, a JSON report), one subprocess per engine (``--engines``, default keras,auto) and
round, rounds interleaved, after one untimed start per engine that fills the compiled-graph cache
(``$MAMMO_ENGINE_CACHE``, a fresh folder of this run unless set); wall time of the whole command
from process start (imports, model loading, prediction, report) and the ratio to the first
engine, median over ``--rounds``; whether the reports' ensemble probabilities agree (max |dp|).

Agreement (``--arrays DIR``, a dataset build with ``train_*`` / ``public_test_*`` arrays, e.g.
``mammo dataset build``'s mini-MIAS output): every patch of the splits through every
configuration, one view per patch (``--tta none``, the strictest comparison: TTA averages
deviations away) or each card's TTA (``--tta card``), then per configuration and member: max and
mean |dp| against Keras f32, calls changed (argmax), the member's AUC on its task and its change;
for the ensemble: five-class calls changed, P(abnormal) AUC (abnormal vs baseline) and its change;
and whether it passes the default rule of issue 23 (calls identical on >= 99.5 % of patches and
every AUC within 0.005). ``--json FILE`` writes the table.

Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = (("keras", "f32"), ("openvino", "f32"), ("openvino", "bf16"))


def _load(members):
    from mammo_core.ensemble import read_ensemble
    from mammo_core.inference import load_bundle
    from mammo_core.paths import models_dir

    md = models_dir()
    _info, spec = read_ensemble(md / "ensemble", None)
    names = members or [m.name for m in spec.members]
    return [load_bundle(md / n, md) for n in names], spec


def _engines():
    from mammo_core.engine import Engine, EngineSettings

    out = {}
    for name, prec in CONFIGS:
        eng = Engine(EngineSettings(name, prec))
        if eng.info(prec).name != name:
            print(f"# {name} {prec}: not available ({eng.info(prec).note})", file=sys.stderr)
            continue
        out[(name, prec)] = eng
    return out


def speed(args) -> None:
    from mammo_core.inference import predict_arrays
    from mammo_core.io import read_patches, to_model_input
    from mammo_core.paths import samples_dir

    models, _ = _load(args.members)
    coll = read_patches([samples_dir()])
    x = to_model_input(coll.patches)
    x = np.concatenate([x] * (args.n // len(x) + 1))[: args.n]
    engines = _engines()
    times: dict[tuple, list[float]] = {k: [] for k in engines}
    for eng in engines.values():  # warm-up: compile, trace
        predict_arrays(models, x[: args.batch], batch_size=args.batch, tta="none", engine=eng)
    keys = list(engines)
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            t = time.perf_counter()
            predict_arrays(models, x, batch_size=args.batch, tta="none", engine=engines[k])
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times[("keras", "f32")])
    print(f"machine={platform.processor() or platform.machine()} cores={os.cpu_count()} "
          f"load_1min={os.getloadavg()[0]:.1f}")
    print(f"members={','.join(m.name for m in models)} patches={len(x)} batch={args.batch} "
          f"rounds={args.rounds} views=1")
    for k in keys:
        med = statistics.median(times[k])
        print(f"{k[0]}_{k[1]}_img_per_s={len(x) / med:.2f} {k[0]}_{k[1]}_vs_keras_f32={base / med:.2f}x "
              f"version={engines[k].info(k[1]).version}")


def cli(args) -> None:
    import subprocess
    import tempfile

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        env.setdefault("MAMMO_ENGINE_CACHE", str(Path(tmp) / "cache"))
        times: dict[str, list[float]] = {e: [] for e in engines}
        first: dict[str, float] = {}
        reports: dict[str, dict] = {}

        def run(engine: str) -> float:
            out = Path(tmp) / f"{engine}.json"
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "mammo_core", "predict", str(args.samples),
                                  "--engine", engine, "--out", str(out)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, check=False)
            sec = time.perf_counter() - t
            if res.returncode != 0:
                raise SystemExit(f"bench_engines: mammo predict --engine {engine} failed: "
                                 f"{res.stderr.strip().splitlines()[-1:]}")
            reports[engine] = json.loads(out.read_text())
            return sec

        for e in engines:  # the first start: fills the cache (conversion) for the engine
            first[e] = run(e)
        for r in range(args.rounds):
            for e in engines[r % len(engines):] + engines[: r % len(engines)]:
                times[e].append(run(e))
    base = statistics.median(times[engines[0]])

    def probs(rep: dict) -> np.ndarray:
        return np.array([[p["probabilities"][c] for c in sorted(p["probabilities"])]
                         for p in rep["predictions"] if p["task"] == "five_class"])

    print(f"machine={platform.processor() or platform.machine()} cores={os.cpu_count()} "
          f"load_1min={os.getloadavg()[0]:.1f}")
    print(f"command=mammo predict {args.samples} (each card's TTA, ensemble, JSON) rounds={args.rounds}")
    for e in engines:
        med = statistics.median(times[e])
        eng = reports[e]["engine"]
        dp = float(np.abs(probs(reports[e]) - probs(reports[engines[0]])).max())
        print(f"cli_{e}_s={med:.2f} cli_{e}_vs_{engines[0]}={base / med:.2f}x first_start_s={first[e]:.2f} "
              f"engine={json.dumps(eng)} max_abs_dp_vs_{engines[0]}={dp:.1e}")


def _auc(y, s) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return None
    if np.ndim(s) == 1:
        return float(roc_auc_score(y, s))
    return float(roc_auc_score(y, s, multi_class="ovr", average="macro"))


def agreement(args) -> None:
    from mammo_core.ensemble import combine
    from mammo_core.inference import predict_arrays
    from mammo_core.io import load_patch_arrays, scale_to_unit
    from mammo_core.labels import get_task

    models, spec = _load(args.members)
    arrays = load_patch_arrays(args.arrays)
    xs, ys = [], []
    for name in ("train", "public_test"):
        if name in arrays.splits and arrays.splits[name].labels is not None:
            sp = arrays.splits[name]
            xs.append(scale_to_unit(sp.images)[..., None])
            ys.append(sp.labels)
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys)
    if args.limit and args.limit < len(x):  # an evenly spaced subset of every split's patches
        pick = np.unique(np.linspace(0, len(x) - 1, args.limit).round().astype(int))
        x, y = x[pick], y[pick]
    engines = _engines()
    probs, secs = {}, {}
    for k, eng in engines.items():
        t = time.perf_counter()
        probs[k] = predict_arrays(models, x, batch_size=args.batch, engine=eng,
                                  tta="none" if args.tta == "none" else None)
        secs[k] = time.perf_counter() - t
        print(f"# {k}: {len(x)} patches in {secs[k]:.0f} s", file=sys.stderr, flush=True)
    ref = probs[("keras", "f32")]
    full = len(spec.members) == len(models)
    table = []
    for k in engines:
        row = {"engine": k[0], "precision": k[1], "version": engines[k].info(k[1]).version,
               "patches": len(x), "tta": args.tta, "seconds": round(secs[k], 1), "members": {}}
        ok = True
        for m in models:
            p, r = probs[k][m.name], ref[m.name]
            keep, ty = get_task(m.task).map_labels(y)
            auc = _auc(ty, p[keep][:, 1] if p.shape[1] == 2 else p[keep])
            auc_ref = _auc(ty, r[keep][:, 1] if r.shape[1] == 2 else r[keep])
            same = float(np.mean(p.argmax(1) == r.argmax(1)))
            d_auc = None if auc is None or auc_ref is None else auc - auc_ref
            row["members"][m.name] = {
                "max_abs_dp": float(np.abs(p - r).max()), "mean_abs_dp": float(np.abs(p - r).mean()),
                "calls_identical": same, "calls_changed": int(np.sum(p.argmax(1) != r.argmax(1))),
                "auc": auc, "auc_delta": d_auc}
            ok &= same >= 0.995 and (d_auc is None or abs(d_auc) <= 0.005)
        if full:
            e, er = combine(spec, probs[k]), combine(spec, ref)
            pa, pr = 1 - np.asarray(e.factors["baseline"]), 1 - np.asarray(er.factors["baseline"])
            same = float(np.mean(np.asarray(e.predicted) == np.asarray(er.predicted)))
            auc, auc_ref = _auc(y > 0, pa), _auc(y > 0, pr)
            row["ensemble"] = {"max_abs_dp": float(np.abs(e.probabilities - er.probabilities).max()),
                               "mean_abs_dp": float(np.abs(e.probabilities - er.probabilities).mean()),
                               "calls_identical": same,
                               "calls_changed": int(np.sum(np.asarray(e.predicted) != np.asarray(er.predicted))),
                               "abnormal_auc": auc, "abnormal_auc_delta": auc - auc_ref}
            ok &= same >= 0.995 and abs(auc - auc_ref) <= 0.005
        row["passes_rule"] = bool(ok)
        table.append(row)
        for name, d in [*row["members"].items(), *([("ensemble", row["ensemble"])] if full else [])]:
            auc = d.get("auc", d.get("abnormal_auc"))
            delta = d.get("auc_delta", d.get("abnormal_auc_delta"))
            print(f"{k[0]} {k[1]} {name}: max|dp|={d['max_abs_dp']:.2e} mean|dp|={d['mean_abs_dp']:.2e} "
                  f"calls_identical={d['calls_identical']:.4f} ({d['calls_changed']} changed) "
                  f"AUC={'n/a' if auc is None else f'{auc:.4f}'} "
                  f"dAUC={'n/a' if delta is None else f'{delta:+.4f}'}")
        print(f"{k[0]} {k[1]}: passes_rule={ok} seconds={secs[k]:.0f} ({len(x) / secs[k]:.2f} img/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": str(args.arrays), "load_1min": os.getloadavg()[0],
                                               "rows": table}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", nargs="*", default=None, help="bundled members (default: the ensemble's)")
    ap.add_argument("--n", type=int, default=128, help="patches per timed pass (speed)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arrays", type=Path, default=None, help="dataset build folder: agreement mode")
    ap.add_argument("--tta", choices=("none", "card"), default="none")
    ap.add_argument("--limit", type=int, default=0, help="an evenly spaced subset of N patches (agreement; 0: all)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cli", action="store_true", help="time whole `mammo predict` commands per engine")
    ap.add_argument("--engines", default="keras,auto", help="engines of --cli, the first the baseline")
    ap.add_argument("--samples", type=Path, default=ROOT / "assets" / "samples", help="patches of --cli")
    args = ap.parse_args()
    if args.cli:
        cli(args)
    elif args.arrays is not None:
        agreement(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
