#!/usr/bin/env python3
"""Training throughput on this machine, one run, printed as key=value lines.

- augment_images_per_s_per_core: augmented patches per second from the training loader
  (``mammo_core.training.pipeline``, Task 2.1 ``geometric`` augmentation, batch 50) with one
  worker thread;
- augment_images_per_s_full: the same with one worker per core (the training default), batches
  made concurrently as Keras' loader threads make them;
- train_images_per_s: scratch_v1 training steps on batches that need no augmentation (the model
  alone, on the Keras backend of KERAS_BACKEND);
- pipeline_to_train_ratio: augment_images_per_s_full / train_images_per_s (aim: >= 3, so the input
  never starves the model); pipeline_to_train_ratio_one_core the same for one worker.
- fe_cache_speedup: seconds per feature-extraction epoch re-running the frozen VGG16 base
  (training the head through the full flat model) divided by seconds per epoch of the same head
  on cached features (aim: >= 5). fe_cache_build_s is the one-time cost of the 3N cache.

Data: seeded synthetic uint16 patches scaled to [0, 1] (throughput does not depend on content);
VGG16 with random weights (same cost as ImageNet weights). The numbers are this machine's, under
whatever else runs on it. Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

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


def drain(ds, workers: int) -> None:
    """Make every batch of one epoch with ``workers`` threads (as Keras' ordered enqueuer does)."""
    if workers <= 1:
        for i in range(len(ds)):
            ds[i]
    else:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(ds.__getitem__, range(len(ds))):
                pass
    ds.on_epoch_end()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="patches for the pipeline and scratch training")
    ap.add_argument("--n-fe", type=int, default=48, help="patches for the VGG16 feature-cache test")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-fe", action="store_true", help="skip the VGG16 feature-cache part")
    args = ap.parse_args(argv)

    import keras

    from mammo_core.models import build_model
    from mammo_core.models.transfer import split_base_head
    from mammo_core.training.distribute import accelerators
    from mammo_core.training.loop import extract_features
    from mammo_core.training.pipeline import default_workers, make_dataset

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 65536, size=(args.n, 150, 150, 1), dtype=np.uint16) / 65535.0).astype(np.float32)
    y = rng.integers(0, 2, size=args.n)
    w = {0: 1.0, 1: 1.0}
    cores = default_workers()
    print(f"backend={keras.backend.backend()}")
    print(f"device={','.join(accelerators()) or 'cpu'}")
    print(f"cores={cores}")
    print(f"load_average_1min={os.getloadavg()[0]:.2f}")
    print(f"n={args.n}")
    print(f"batch_size={args.batch_size}")

    ds = make_dataset(x, y, batch_size=args.batch_size, weights=w, shuffle=True, augment="geometric")
    one = args.n / timed_epochs(lambda: drain(ds, 1), args.repeats)
    full = args.n / timed_epochs(lambda: drain(ds, cores), args.repeats)
    print(f"augment_images_per_s_per_core={one:.1f}")
    print(f"augment_images_per_s_full={full:.1f}")
    print(f"augment_parallel_speedup={full / one:.2f}")

    model = build_model("scratch_v1", 2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    plain = make_dataset(x, y, batch_size=args.batch_size, weights=w, shuffle=True)
    t_train = timed_epochs(lambda: model.fit(plain, epochs=1, verbose=0, shuffle=False), args.repeats)
    train_ips = args.n / t_train
    print(f"train_images_per_s={train_ips:.1f}")
    print(f"pipeline_to_train_ratio={full / train_ips:.2f}")
    print(f"pipeline_to_train_ratio_one_core={one / train_ips:.2f}")
    if args.skip_fe:
        return 0

    # feature extraction: re-running the frozen base every epoch vs training on a cache
    n = args.n_fe
    xf, yf = x[:n], y[:n]
    full_model = build_model("transfer", 2, backbone="vgg16", mode="fe", weights="none")
    base, head = split_base_head(full_model)
    for m in (full_model, head):
        m.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    img_ds = make_dataset(xf, yf, batch_size=args.batch_size, weights=w, shuffle=True, augment="geometric")
    t_full = timed_epochs(lambda: full_model.fit(img_ds, epochs=1, verbose=0, shuffle=False), 1)
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
