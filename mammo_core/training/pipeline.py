"""The input pipeline: a backend-neutral ``keras.utils.PyDataset`` of patches (or cached
features) with the study's augmentation (:mod:`mammo_core.training.augment`).

The same loader feeds Keras on TensorFlow and on JAX. Augmentation runs in numpy/OpenCV on
Keras' worker threads (``workers``: all cores by default; ``cv2.warpAffine`` releases the GIL),
one batch per task. Every element's transform comes from a random stream keyed by
``(seed, epoch, index)`` and the epoch's order from ``(seed, epoch)``, so a run gives the same
batches at any number of workers. The epoch counter advances in ``on_epoch_end``, which Keras
calls after each epoch's batches are all made (and once more when ``fit`` starts), never while
its worker threads run.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np

from mammo_core.training.augment import AugmentSpec, augment_batch, get_spec


def default_workers() -> int:
    """Loader threads: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of ``n`` elements in ``epoch`` (a function of seed and epoch only)."""
    return np.random.default_rng([int(seed), int(epoch), 1]).permutation(n)


@lru_cache(maxsize=1)
def _dataset_class():
    import keras

    class PatchDataset(keras.utils.PyDataset):
        """Batches ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)`` of arrays in memory."""

        def __init__(self, x, y=None, *, batch_size: int, weights=None, shuffle: bool = False,
                     augment="none", seed: int = 0, epoch: int = 0, workers: int | None = None,
                     drop_remainder: bool = False, multiple_of: int = 1):
            self.spec = get_spec(augment)
            if workers is None:
                workers = default_workers() if not self.spec.is_identity else 1
            super().__init__(workers=int(workers), use_multiprocessing=False,
                             max_queue_size=max(10, 2 * int(workers)))
            x = np.asarray(x)
            if x.dtype != np.float32:
                x = x.astype(np.float32)
            if x.ndim == 3:
                x = x[..., None]
            self.x = x
            self.y = None if y is None else np.asarray(y, dtype=np.int64)
            self.w = None
            if self.y is not None and weights is not None:
                self.w = np.array([weights[int(c)] for c in self.y], dtype=np.float32)
            self.batch_size = int(batch_size)
            self.shuffle = bool(shuffle)
            self.seed = int(seed)
            self.epoch = int(epoch)
            self.drop_remainder = bool(drop_remainder)
            self.multiple_of = max(1, int(multiple_of))

        def _n(self) -> int:
            # elements used per epoch: a multiple of ``multiple_of`` (batches that split evenly
            # over devices); with shuffling, a different remainder is left out each epoch
            return len(self.x) // self.multiple_of * self.multiple_of

        def __len__(self) -> int:
            n = self._n()
            return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

        def order(self, epoch: int) -> np.ndarray:
            order = epoch_order(len(self.x), self.seed, epoch) if self.shuffle else np.arange(len(self.x))
            return order[:self._n()]

        def batch_indices(self, i: int, epoch: int | None = None) -> np.ndarray:
            epoch = self.epoch if epoch is None else epoch
            return self.order(epoch)[i * self.batch_size:(i + 1) * self.batch_size]

        def __getitem__(self, i: int):
            if i < 0 or i >= len(self):
                raise IndexError(i)
            epoch = self.epoch
            idx = self.batch_indices(i, epoch)
            xb = augment_batch(self.x[idx], idx, self.spec, self.seed, epoch)
            if self.y is None:
                return (xb,)
            if self.w is None:
                return xb, self.y[idx]
            return xb, self.y[idx], self.w[idx]

        def on_epoch_end(self) -> None:
            self.epoch += 1

    return PatchDataset


def make_dataset(x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int,
                 weights: dict[int, float] | None = None, shuffle: bool = False,
                 augment: str | AugmentSpec = "none", seed: int = 0, epoch: int = 0, workers: int | None = None,
                 drop_remainder: bool = False, multiple_of: int = 1):
    """A :class:`PatchDataset` (``keras.utils.PyDataset``) over ``x`` (and labels, and per-sample
    weights from the class weights) with augmentation ``augment`` (see ``augment.AUGMENT_SPECS``).

    ``workers`` = loader threads (default: all cores when augmenting, else 1); the batches are the
    same at any value. ``epoch`` is the starting epoch of the seeded stream (the feature cache uses
    one per augmented copy). ``multiple_of`` trims each epoch to a multiple of it (JAX data
    parallelism needs batches that split evenly over the devices)."""
    return _dataset_class()(x, y, batch_size=batch_size, weights=weights, shuffle=shuffle, augment=augment,
                            seed=seed, epoch=epoch, workers=workers, drop_remainder=drop_remainder,
                            multiple_of=multiple_of)
