#!/usr/bin/env python3
"""Can the training loader feed an accelerator? One run, per task model, printed as key=value lines.

For each task's model (its real loader and augmentation), on the Keras backend of KERAS_BACKEND
(default here: jax):

- ``<task>.model_alone_images_per_s``: training steps on synthetic batches already on the device
  (no loader, no augmentation, no host-to-device copy): what the accelerator can take;
- ``<task>.loader_alone_images_per_s``: the training loader making augmented batches on the CPU
  with one thread per core (no model);
- ``<task>.end_to_end_images_per_s``: ``model.fit`` on the augmenting loader (what training gets);
- ``<task>.end_to_end_over_model_alone``: the fraction of the accelerator the loader keeps busy;
- ``loader_scaling.workers_<k>``: the loader's augmented images/s with k threads (1, 2, 4, ... cores).

Where end to end falls below 0.8 of model alone (or with ``--in-graph always``), the in-graph path
(:mod:`mammo_core.training.augment_graph`: the same seeded affine, drawn on the host, resampled on
the accelerator from a device-resident copy of the patches) is timed too:
``<task>.in_graph_end_to_end_images_per_s``, and ``<task>.in_graph_max_abs_diff_vs_cpu`` (its first
batch against the CPU loader's; must stay below 1e-4).

Data: seeded synthetic float32 patches in [0, 1] (throughput does not depend on content);
transfer models with random weights (the same cost as ImageNet weights). ``--tiny`` runs in
seconds on a CPU (CI); the default sizes are meant for one GPU, under 5 minutes. The numbers are
this machine's, under whatever else runs on it.

Not yet run on a GPU: no accelerator was lent to the task (issue 25) that wrote this benchmark
and its follow-up, so no GPU numbers exist in this repository; an independent check on an
H100/H200 is still to be done (``KERAS_BACKEND=jax python benchmarks/bench_gpu.py``).
Research use only - not a medical device.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from bench_training import drain, timed_epochs  # the same timing and loader drain as the CPU benchmark

from mammo_core.models import build_model
from mammo_core.training.augment import augment_batch, get_spec
from mammo_core.training.augment_graph import augment_in_graph
from mammo_core.training.distribute import accelerators
from mammo_core.training.pipeline import default_workers, make_dataset

# task -> (registry model, options, classes, augmentation of its preset)
TASKS = {
    "2.1": ("scratch_v1", {}, 2, "geometric"),
    "2.2": ("scratch_v2", {}, 2, "geometric_rot90_reflect"),
    "3.1": ("transfer", {"backbone": "vgg16", "mode": "ft", "weights": "none"}, 2, "geometric"),
    "4": ("scratch_v1", {}, 3, "geometric"),
}


def model_alone(model, x: np.ndarray, y: np.ndarray, batch: int, steps: int, repeats: int) -> float:
    """Images/s of training steps on one batch already on the device."""
    import keras

    xb = keras.ops.convert_to_tensor(x[:batch])  # on the default device (the accelerator if any)
    yb = keras.ops.convert_to_tensor(y[:batch])

    def run():
        for _ in range(steps):
            model.train_on_batch(xb, yb)
        keras.ops.convert_to_numpy(model.predict_on_batch(xb[:1]))  # wait for the queued steps

    return batch * steps / timed_epochs(run, repeats)


def bench_task(task: str, x: np.ndarray, args) -> dict[str, float | str]:
    import keras

    name, opts, n_classes, augment = TASKS[task]
    y = np.arange(len(x)) % n_classes
    keras.utils.set_random_seed(0)
    model = build_model(name, n_classes, **opts)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    out: dict[str, float | str] = {"model": name, "augment": augment}
    out["model_alone_images_per_s"] = model_alone(model, x, y, args.batch_size, args.steps, args.repeats)
    ds = make_dataset(x, y, batch_size=args.batch_size, shuffle=True, augment=augment, workers=args.workers)
    out["loader_alone_images_per_s"] = len(x) / timed_epochs(lambda: drain(ds, args.workers), args.repeats)
    out["end_to_end_images_per_s"] = len(x) / timed_epochs(
        lambda: model.fit(ds, epochs=1, verbose=0, shuffle=False), args.repeats)
    ratio = out["end_to_end_images_per_s"] / out["model_alone_images_per_s"]
    out["end_to_end_over_model_alone"] = ratio
    if (ratio < 0.8 or args.in_graph == "always") and not get_spec(augment).is_identity \
            and args.in_graph != "never":
        out["in_graph_augmentation"] = (f"needed (end to end {ratio:.2f} of model alone < 0.8)" if ratio < 0.8
                                        else "forced (--in-graph always)")
        out.update(in_graph(model, x, y, augment, args))
    return out


def in_graph(model, x: np.ndarray, y: np.ndarray, augment: str, args) -> dict[str, float]:
    """Images/s of an epoch whose augmentation runs on the device, and its first batch's largest
    difference from the CPU loader's augmentation."""
    import keras
    from keras import ops

    xd = ops.convert_to_tensor(x)  # the patches, resident on the device
    yd = ops.convert_to_tensor(y)
    bs = args.batch_size
    starts = range(0, len(x) - bs + 1, bs)

    def epoch(e: int = 0):
        order = np.random.default_rng([0, e]).permutation(len(x))
        for s in starts:
            idx = order[s:s + bs]
            ii = ops.convert_to_tensor(idx.astype(np.int32))
            xb = augment_in_graph(ops.take(xd, ii, axis=0), idx, augment, seed=0, epoch=e)
            model.train_on_batch(xb, ops.take(yd, ii, axis=0))
        keras.ops.convert_to_numpy(model.predict_on_batch(xd[:1]))

    idx = np.arange(min(bs, len(x)))
    cpu = augment_batch(x[idx], idx, augment, seed=0, epoch=0)
    dev = ops.convert_to_numpy(augment_in_graph(ops.convert_to_tensor(x[idx]), idx, augment, seed=0, epoch=0))
    return {"in_graph_end_to_end_images_per_s": len(starts) * bs / timed_epochs(epoch, args.repeats),
            "in_graph_max_abs_diff_vs_cpu": float(np.abs(cpu - dev).max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=tuple(TASKS), default=tuple(TASKS))
    ap.add_argument("--n", type=int, default=2000, help="patches per epoch (loader and end to end)")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--steps", type=int, default=40, help="training steps timed for the model alone")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="loader threads (0 = every core)")
    ap.add_argument("--in-graph", choices=("auto", "always", "never"), default="auto",
                    help="time the in-graph augmentation path: when end to end < 0.8 of model alone (auto)")
    ap.add_argument("--tiny", action="store_true", help="CI size: 16 patches, batch 8, 2 steps, 1 repeat")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n, args.batch_size, args.steps, args.repeats = 16, 8, 2, 1
    args.workers = args.workers or default_workers()

    import keras

    rng = np.random.default_rng(0)
    x = rng.random((args.n, 150, 150, 1), dtype=np.float32)
    print(f"backend={keras.backend.backend()}")
    print(f"device={','.join(accelerators()) or 'cpu'}")
    print(f"cores={default_workers()}")
    print(f"load_average_1min={os.getloadavg()[0]:.2f}")
    print(f"n={args.n} batch_size={args.batch_size} loader_workers={args.workers}")
    for task in args.tasks:
        for k, v in bench_task(task, x, args).items():
            print(f"{task}.{k}={v:.1f}" if isinstance(v, float) and k.endswith("_per_s")
                  else f"{task}.{k}={v:.2e}" if k.endswith("_diff_vs_cpu")
                  else f"{task}.{k}={v:.3f}" if isinstance(v, float) else f"{task}.{k}={v}")
    # the CPU loader's scaling with threads (Task 2.1's augmentation)
    y = np.arange(len(x)) % 2
    k = 1
    while k <= default_workers():
        ds = make_dataset(x, y, batch_size=args.batch_size, shuffle=True, augment="geometric", workers=k)
        rate = len(x) / timed_epochs(lambda ds=ds, k=k: drain(ds, k), args.repeats)
        print(f"loader_scaling.workers_{k}={rate:.1f}")
        k *= 2
    print("research use only - not a medical device")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
