"""The tf.data input pipeline and the study's augmentation (Keras preprocessing layers).

Augmentation runs in the tf.data pipeline on batches, never inside the saved model:
- ``geometric`` (Task 2.1): RandomRotation(+-40 deg), RandomTranslation(0.2, 0.2),
  RandomZoom(0.2), RandomShear(0.2, 0.2), all with ``fill_mode="nearest"`` (the study's
  ``ImageDataGenerator(rotation_range=40, width/height_shift_range=0.2, zoom_range=0.2,
  shear_range=0.2, fill_mode="nearest")``; Keras 3's RandomShear factor is a shear
  intensity, ImageDataGenerator's was an angle - the closest Keras 3 equivalent).
- ``rot90`` (Task 2.2): a random rotation by 0, 90, 180 or 270 degrees per patch, no flips.
  The study's ``fill_mode="reflect"`` has no effect for right-angle rotations of a square patch.
- ``none``: the study's variant without augmentation.
"""
from __future__ import annotations

import numpy as np


def make_augmenter(kind: str, seed: int = 0):
    """A function ``batch (B,150,150,1) float32 -> augmented batch`` (TensorFlow ops), or None."""
    import keras
    import tensorflow as tf

    if kind == "none":
        return None
    if kind == "geometric":
        layers = [
            keras.layers.RandomRotation(40.0 / 360.0, fill_mode="nearest", seed=seed + 1),
            keras.layers.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=seed + 2),
            keras.layers.RandomZoom(0.2, fill_mode="nearest", seed=seed + 3),
            keras.layers.RandomShear(0.2, 0.2, fill_mode="nearest", seed=seed + 4),
        ]

        def augment(batch):
            for layer in layers:
                batch = layer(batch, training=True)
            return tf.clip_by_value(batch, 0.0, 1.0)

        return augment
    if kind == "rot90":
        gen = tf.random.Generator.from_seed(seed + 5)

        def augment(batch):
            k = gen.uniform([tf.shape(batch)[0]], 0, 4, dtype=tf.int32)

            def rot(args):
                img, kk = args
                return tf.image.rot90(img, kk)

            return tf.map_fn(rot, (batch, k), fn_output_signature=batch.dtype)

        return augment
    raise ValueError(f"unknown augmentation {kind!r}")


def make_dataset(x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int,
                 weights: dict[int, float] | None = None, shuffle: bool = False,
                 augment: str = "none", seed: int = 0, repeat: bool = False, parallel: bool = False):
    """A batched, prefetched ``tf.data.Dataset`` of ``x`` (and labels, and per-sample weights
    from the class weights) with the augmentation applied per batch.

    The augmentation layers draw from stateful seeded generators: applied one batch after the
    other (``parallel=False``, the default) a run is reproducible from its seed; ``parallel=True``
    maps batches concurrently (faster input on a GPU, but the draws then depend on thread
    timing and runs are no longer bit-reproducible)."""
    import tensorflow as tf

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]
    parts: tuple = (x,)
    if y is not None:
        y = np.asarray(y, dtype=np.int64)
        parts = (x, y)
        if weights is not None:
            w = np.array([weights[int(c)] for c in y], dtype=np.float32)
            parts = (x, y, w)
    ds = tf.data.Dataset.from_tensor_slices(parts if len(parts) > 1 else x)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    fn = make_augmenter(augment, seed)
    calls = tf.data.AUTOTUNE if parallel else None
    if fn is not None:
        if len(parts) == 1:
            ds = ds.map(fn, num_parallel_calls=calls)
        else:
            ds = ds.map(lambda xb, *rest: (fn(xb), *rest), num_parallel_calls=calls)
    return ds.prefetch(tf.data.AUTOTUNE)
