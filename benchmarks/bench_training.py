#!/usr/bin/env python3
"""Training throughput on this machine, one run, printed as key=value lines.

- pipeline_images_per_s: augmented batches (Task 2.1 geometric augmentation, batch 50) produced
  by the tf.data pipeline, no model run (the default, reproducible sequential map);
  pipeline_parallel_images_per_s the same with ``--parallel-augment`` (concurrent map).
- train_images_per_s: scratch_v1 training steps on the same pipeline (augmentation included).
- pipeline_to_train_ratio: the first over the second (aim: >= 3, so the input never starves
  the model).
- fe_cache_speedup: seconds per feature-extraction epoch re-running the frozen VGG16 base
  (training the head through the full flat model) divided by seconds per epoch of the same head
  on cached features (aim: >= 5). fe_cache_build_s is the one-time cost of the cache.

Data: seeded synthetic uint16 patches scaled to [0, 1] (throughput does not depend on content);
VGG16 with random weights (same cost as ImageNet weights). Small N keeps the run to a few
minutes on a CPU. Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def timed_epochs(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="patches for the scratch pipeline/training")
    ap.add_argument("--n-fe", type=int, default=48, help="patches for the VGG16 feature-cache test")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from mammo_core.models import build_model
    from mammo_core.models.transfer import split_base_head
    from mammo_core.training.loop import extract_features
    from mammo_core.training.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 65536, size=(args.n, 150, 150, 1), dtype=np.uint16) / 65535.0).astype(np.float32)
    y = rng.integers(0, 2, size=args.n)
    w = {0: 1.0, 1: 1.0}
    print(f"device={'gpu' if tf.config.list_physical_devices('GPU') else 'cpu'}")
    print(f"cpu_threads={os.cpu_count()}")
    print(f"n={args.n}")
    print(f"batch_size={args.batch_size}")

    def drain(d):
        for _ in d:
            pass

    par = make_dataset(x, y, batch_size=args.batch_size, weights=w, shuffle=True, augment="geometric",
                       parallel=True)
    par_ips = args.n / timed_epochs(lambda: drain(par), args.repeats)
    ds = make_dataset(x, y, batch_size=args.batch_size, weights=w, shuffle=True, augment="geometric")
    pipe_ips = args.n / timed_epochs(lambda: drain(ds), args.repeats)
    print(f"pipeline_images_per_s={pipe_ips:.1f}")
    print(f"pipeline_parallel_images_per_s={par_ips:.1f}")

    model = build_model("scratch_v1", 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t_train = timed_epochs(lambda: model.fit(ds, epochs=1, verbose=0, shuffle=False), args.repeats)
    train_ips = args.n / t_train
    print(f"train_images_per_s={train_ips:.1f}")
    print(f"pipeline_to_train_ratio={pipe_ips / train_ips:.2f}")

    # feature extraction: re-running the frozen base every epoch vs training on a cache
    n = args.n_fe
    xf, yf = x[:n], y[:n]
    full = build_model("transfer", 2, backbone="vgg16", mode="fe", weights="none")
    base, head = split_base_head(full)
    for m in (full, head):
        m.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    img_ds = make_dataset(xf, yf, batch_size=args.batch_size, weights=w, shuffle=True, augment="geometric")
    t_full = timed_epochs(lambda: full.fit(img_ds, epochs=1, verbose=0, shuffle=False), 1)
    t0 = time.perf_counter()
    feats, fy = extract_features(base, xf, args.batch_size, "geometric", 2, 0, yf)
    t_build = time.perf_counter() - t0
    # an epoch over the same number of samples as the image epoch
    feat_ds = make_dataset(feats[:n], fy[:n], batch_size=args.batch_size, weights=w, shuffle=True)
    t_cached = timed_epochs(lambda: head.fit(feat_ds, epochs=1, verbose=0, shuffle=False), args.repeats)
    print(f"fe_n={n}")
    print(f"fe_epoch_full_s={t_full:.3f}")
    print(f"fe_epoch_cached_s={t_cached:.4f}")
    print(f"fe_cache_build_s={t_build:.2f}")
    print(f"fe_cache_speedup={t_full / t_cached:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
