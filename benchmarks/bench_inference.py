#!/usr/bin/env python3
"""Inference benchmark: prints key=value lines, all measured in this one run.

overhead_ratio              Session.predict (the project's batched prediction, from 512 uint16
                            Patch objects: scaling, batching, per-batch calls, result objects)
                            / raw ``model.predict`` on the same, already-scaled float32 array
                            (scratch_v1, batch 32). Median of --repeats interleaved runs each, after warm-up.
overhead_ratio_arrays       inference.predict_arrays on the float32 array / raw model.predict
gradcam_s_per_patch_scratch Grad-CAM (tf-keras-vis Gradcam) seconds per patch, scratch_v1,
                            batches of 8, visualizer already built (its one-off build time is
                            gradcam_setup_s_scratch)
gradcam_s_per_patch_vgg16   the same for the flat VGG16 transfer model (weights: none)
tta_cost_ratio              predict_arrays with test-time augmentation (mean over the 8 dihedral
                            views, a card's ``inference.tta: dihedral8``) / without, scratch_v1
                            (and tta_cost_ratio_pooled_vgg16 for the pooled VGG16 member, blocks
                            2-4, on 64 patches, unless --skip-vgg16)
ensemble_s_per_patch        Session.predict with an ensemble of 3 scratch_v1 members
                            (mass_calc, benign_malignant, baseline_mass_calc) + the
                            hierarchy, per patch (512 patches)

Untrained weights (timing does not depend on them). Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _bundle(root: Path, name: str, task: str, arch: str, **opts):
    from mammo_core.bundle import write_bundle
    from mammo_core.labels import get_task
    from mammo_core.models import build_model, gradcam_layer

    t = get_task(task)
    model = build_model(arch, t.n_classes, **opts)
    write_bundle(model, root / name, {"name": name, "task": task, "classes": list(t.classes),
                                      "architecture": {"model": arch, "options": opts},
                                      "gradcam_layer": gradcam_layer(arch, **opts),
                                      "training": {"method": "none (benchmark, untrained)"}})
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="patches (default 512)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-vgg16", action="store_true")
    args = ap.parse_args(argv)

    import tensorflow as tf

    from mammo_core.bundle import write_manifest
    from mammo_core.ensemble import MemberInfo, fit_ensemble, write_ensemble
    from mammo_core.explain import gradcam, visualizer
    from mammo_core.inference import load_bundle, predict_arrays
    from mammo_core.io import Patch, to_model_input
    from mammo_core.session import Session

    print(f"device={'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}")
    print(f"cpu_count={os.cpu_count()} machine={platform.machine()} tf={tf.__version__}")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65535, (args.n, 150, 150), dtype=np.uint16)
    patches = [Patch(p, f"bench{i}.png") for i, p in enumerate(pixels)]
    x = to_model_input(pixels)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        _bundle(root, "scratch_v1_bench", "mass_calc", "scratch_v1")
        write_manifest(root)
        s = Session(root)
        assert s.load(["scratch_v1_bench"]) == []
        lm = load_bundle(root / "scratch_v1_bench")
        raw_model = lm.model

        # warm-up (graph tracing) for every path
        raw_model.predict(x[:64], batch_size=args.batch_size, verbose=0)
        s.predict(patches[:64], batch_size=args.batch_size)
        predict_arrays([lm], x[:64], batch_size=args.batch_size)

        # interleaved repeats (raw, session, arrays, raw, ...) so load drift on a shared
        # machine hits all three alike; the ratio uses the medians (min also printed)
        runs = {"raw": [], "session": [], "arrays": []}
        for _ in range(args.repeats):
            for key, fn in (("raw", lambda: raw_model.predict(x, batch_size=args.batch_size, verbose=0)),
                            ("session", lambda: s.predict(patches, batch_size=args.batch_size)),
                            ("arrays", lambda: predict_arrays([lm], x, batch_size=args.batch_size))):
                t = time.perf_counter()
                fn()
                runs[key].append(time.perf_counter() - t)
        t_raw, t_sess, t_arr = (statistics.median(runs[k]) for k in ("raw", "session", "arrays"))
        print(f"overhead_ratio_min={min(runs['session']) / min(runs['raw']):.3f}")
        print(f"raw_predict_s={t_raw:.4f}")
        print(f"session_predict_s={t_sess:.4f}")
        print(f"predict_arrays_s={t_arr:.4f}")
        print(f"overhead_ratio={t_sess / t_raw:.3f}")
        print(f"overhead_ratio_arrays={t_arr / t_raw:.3f}")

        # test-time augmentation: 8 dihedral views per patch
        predict_arrays([lm], x[:64], batch_size=args.batch_size, tta="dihedral8")  # warm-up
        t_tta = _median_time(lambda: predict_arrays([lm], x, batch_size=args.batch_size, tta="dihedral8"),
                             args.repeats)
        print(f"tta_predict_arrays_s={t_tta:.4f}")
        print(f"tta_cost_ratio={t_tta / t_arr:.3f}")

        # Grad-CAM, scratch_v1
        layer = lm.gradcam_layer
        t = time.perf_counter()
        visualizer(lm.model, "gradcam")
        print(f"gradcam_setup_s_scratch={time.perf_counter() - t:.3f}")
        gradcam(lm.model, x[:8], class_index=0, layer=layer, batch_size=8)  # warm-up
        k = 32
        t_g = _median_time(lambda: gradcam(lm.model, x[:k], class_index=0, layer=layer, batch_size=8), args.repeats)
        print(f"gradcam_s_per_patch_scratch={t_g / k:.4f}")

        if not args.skip_vgg16:
            _bundle(root, "vgg16_bench", "mass_calc", "transfer", backbone="vgg16", weights="none")
            vm = load_bundle(root / "vgg16_bench")
            gradcam(vm.model, x[:8], class_index=0, layer=vm.gradcam_layer, batch_size=8)  # build + warm-up
            k = 8
            t_v = _median_time(lambda: gradcam(vm.model, x[:k], class_index=0, layer=vm.gradcam_layer,
                                               batch_size=8), 2)
            print(f"gradcam_s_per_patch_vgg16={t_v / k:.4f}")
            _bundle(root, "pooled_bench", "mass_calc", "transfer", backbone="vgg16", weights="none", head="pooled",
                    pool_layers="block2_pool,block3_pool,block4_pool", pooling="avgmax")
            pm = load_bundle(root / "pooled_bench")
            xs = x[:64]
            predict_arrays([pm], xs[:8], batch_size=args.batch_size)  # warm-up
            t_p1 = _median_time(lambda: predict_arrays([pm], xs, batch_size=args.batch_size, tta="none"), 2)
            t_p8 = _median_time(lambda: predict_arrays([pm], xs, batch_size=args.batch_size, tta="dihedral8"), 2)
            print(f"pooled_vgg16_s_per_patch={t_p1 / len(xs):.4f}")
            print(f"tta_cost_ratio_pooled_vgg16={t_p8 / t_p1:.3f}")

        # ensemble of three scratch_v1 members
        eroot = Path(tmp) / "ens_models"
        tasks = ("mass_calc", "benign_malignant", "baseline_mass_calc")
        for task in tasks:
            _bundle(eroot, f"scratch_v1_{task}", task, "scratch_v1")
        members = [load_bundle(eroot / f"scratch_v1_{t}") for t in tasks]
        labels = np.where(np.arange(64) % 2 == 0, 0, rng.integers(1, 5, 64))
        spec = fit_ensemble([MemberInfo.from_bundle(m.info) for m in members],
                            predict_arrays(members, x[:64]), labels)
        write_ensemble(eroot / "ensemble", spec)
        write_manifest(eroot)
        es = Session(eroot)
        assert es.load(["ensemble"]) == []
        es.predict(patches[:64], batch_size=args.batch_size)
        t_e = _median_time(lambda: es.predict(patches, batch_size=args.batch_size), args.repeats)
        print(f"ensemble_s_per_patch={t_e / args.n:.5f}")
        print(f"single_model_s_per_patch={t_sess / args.n:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
