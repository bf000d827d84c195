"""Conformal prediction sets for the ensemble's five-class answer (class-conditional, "Mondrian").

At level ``1 - alpha`` (90 % by default) the set of a patch holds its true class with probability
at least ``1 - alpha`` *for every true class separately*: the guarantee that matters with five
classes of very different size (a few dozen calcification patches beside ~900 normal ones; a
plain, marginal set could reach 90 % by always covering normal tissue and rarely a
calcification).

Method (split conformal, class-conditional; Vovk 2003, "Mondrian confidence machines"):

* nonconformity of a calibration patch with true class ``y``: ``s = 1 - p_y`` (the ensemble's
  five-class probability of its own class);
* per class ``c`` with ``n_c`` calibration patches: ``q_c`` = the ``k``-th smallest of their
  scores, ``k = ceil((n_c + 1)(1 - alpha))``; when ``k > n_c`` (fewer than ``1/alpha - 1``
  patches) ``q_c = 1`` and the class is always in the set (honest: too few to say more);
* the set of a new patch: every class with ``1 - p_c <= q_c``, i.e. ``p_c >= t_c = 1 - q_c``.

The fitted result is five numbers (:class:`ConformalSpec.thresholds`), stored in the ensemble's
typed spec (``ensemble.json``, hashed by the card and the manifest). Why not MAPIE or crepes at
run time: their fitted objects persist only by pickling, which the product never loads from
disk; the quantile above is the whole computation both libraries perform for this variant, so the
product stores its result as plain numbers and tests check the coverage on synthetic scores.

Calibrated on the members' out-of-fold predictions over the training women (the same folds,
grouped by woman, that every other ensemble choice is fitted on); the test split is scored once,
for reporting. A set of more than one class reads as *uncertain*; an empty set (no class
conforms at this level) as *unlike every class*, and is counted as uncertain as well.

Research use only — not a medical device.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammo_core.errors import BundleError
from mammo_core.labels import CLASS_NAMES

DEFAULT_LEVEL = 0.9
METHOD = ("class-conditional (Mondrian) split conformal on the ensemble's five-class probabilities; "
          "nonconformity 1 - p(true class); per class the ceil((n+1)·level)-th smallest calibration "
          "score; a class with too few calibration patches is always in the set")


def class_quantile(scores: np.ndarray, level: float) -> float:
    """The conformal quantile of one class's calibration scores (``1.0`` = always included)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    k = math.ceil((n + 1) * level - 1e-9)  # no float excess: 20 * 0.9 is 18, not 19
    if n == 0 or k > n:
        return 1.0
    return float(s[k - 1])


@dataclass(frozen=True)
class ConformalSpec:
    """The fitted class-conditional conformal sets: class ``c`` is in a patch's set when its
    five-class probability is at least ``thresholds[c]`` (columns = ``CLASS_NAMES``)."""

    level: float
    thresholds: tuple[float, ...]
    n: tuple[int, ...]  # calibration patches per true class
    calibration: str = ""  # on which predictions it was calibrated
    method: str = METHOD

    def __post_init__(self) -> None:
        if not (isinstance(self.level, (int, float)) and 0.0 < float(self.level) < 1.0):
            raise BundleError(f"conformal level {self.level!r} must be in (0, 1)")
        if len(self.thresholds) != len(CLASS_NAMES) or len(self.n) != len(CLASS_NAMES):
            raise BundleError(f"conformal thresholds and counts need {len(CLASS_NAMES)} values, one per class")
        for t in self.thresholds:
            if not (isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0):
                raise BundleError(f"conformal threshold {t!r} must be a number in [0, 1]")
        for k in self.n:
            if not (isinstance(k, int) and not isinstance(k, bool) and k >= 0):
                raise BundleError(f"conformal calibration count {k!r} must be an integer >= 0")

    def sets(self, p5: np.ndarray) -> np.ndarray:
        """(N, 5) bool: which classes are in each patch's set."""
        p5 = np.asarray(p5, dtype=np.float64)
        if p5.ndim != 2 or p5.shape[1] != len(CLASS_NAMES):
            raise ValueError(f"five-class probabilities must be (N, 5), got {p5.shape}")
        # a hair of tolerance so a probability equal to its threshold is in (float round trip)
        return p5 >= np.asarray(self.thresholds)[None, :] - 1e-12

    def names(self, p5: np.ndarray) -> list[tuple[str, ...]]:
        """Each patch's set as class names (in ``CLASS_NAMES`` order)."""
        return [tuple(c for c, k in zip(CLASS_NAMES, row) if k) for row in self.sets(p5)]

    def to_dict(self) -> dict[str, Any]:
        return {"level": float(self.level), "thresholds": [float(t) for t in self.thresholds],
                "n": [int(k) for k in self.n], "classes": list(CLASS_NAMES),
                "calibration": self.calibration, "method": self.method}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConformalSpec:
        if not isinstance(d, Mapping):
            raise BundleError("'conformal' must be an object")
        try:
            if list(d["classes"]) != list(CLASS_NAMES):
                raise BundleError(f"conformal classes {d['classes']!r} are not {list(CLASS_NAMES)}")
            return cls(level=float(d["level"]), thresholds=tuple(float(t) for t in d["thresholds"]),
                       n=tuple(int(k) for k in d["n"]), calibration=str(d["calibration"]),
                       method=str(d["method"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed conformal spec: {type(exc).__name__}: {exc}") from None


def fit_conformal(p5: np.ndarray, labels: np.ndarray, level: float = DEFAULT_LEVEL,
                  calibration: str = "") -> ConformalSpec:
    """Class-conditional conformal thresholds from calibration probabilities ``p5`` (N, 5) and
    their 0-4 ``labels``."""
    p5 = np.asarray(p5, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if p5.shape != (len(labels), len(CLASS_NAMES)):
        raise ValueError(f"calibration probabilities {p5.shape} do not match {len(labels)} labels")
    thr, ns = [], []
    for c in range(len(CLASS_NAMES)):
        s = 1.0 - p5[labels == c, c]
        thr.append(float(np.clip(1.0 - class_quantile(s, level), 0.0, 1.0)))
        ns.append(len(s))
    return ConformalSpec(level=float(level), thresholds=tuple(thr), n=tuple(ns), calibration=calibration)


def cross_conformal_sets(p5: np.ndarray, labels: np.ndarray, fold: np.ndarray,
                         level: float = DEFAULT_LEVEL) -> np.ndarray:
    """Each patch's set from thresholds calibrated on the OTHER folds (folds grouped by woman):
    an estimate of the coverage on unseen women that the in-sample check cannot give."""
    p5 = np.asarray(p5, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    fold = np.asarray(fold)
    out = np.zeros(p5.shape, dtype=bool)
    for f in np.unique(fold):
        held = fold == f
        spec = fit_conformal(p5[~held], labels[~held], level)
        out[held] = spec.sets(p5[held])
    return out


def coverage_table(sets: np.ndarray, labels: np.ndarray, calls: np.ndarray | None = None,
                   groups: np.ndarray | None = None, n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    """Empirical coverage and mean set size overall and per true class; with ``calls`` (the
    ensemble's call per patch) how many wrong calls get a set of more than one class (or an
    empty one); with ``n_boot`` a 95 % bootstrap interval of the overall coverage resampling
    ``groups`` (women; patches when None)."""
    sets = np.asarray(sets, dtype=bool)
    labels = np.asarray(labels, dtype=np.int64)
    hit = sets[np.arange(len(labels)), labels]
    size = sets.sum(axis=1)
    out: dict[str, Any] = {"n": len(labels), "coverage": float(hit.mean()) if len(hit) else math.nan,
                           "mean_set_size": float(size.mean()) if len(size) else math.nan,
                           "uncertain_fraction": float((size != 1).mean()) if len(size) else math.nan,
                           "per_class": {}}
    for c, name in enumerate(CLASS_NAMES):
        k = labels == c
        out["per_class"][name] = {"n": int(k.sum()),
                                  "coverage": float(hit[k].mean()) if k.any() else None,
                                  "mean_set_size": float(size[k].mean()) if k.any() else None}
    if calls is not None:
        wrong = np.asarray(calls) != labels
        out["wrong_calls"] = int(wrong.sum())
        out["wrong_calls_uncertain"] = int((wrong & (size != 1)).sum())
    if n_boot and len(labels):
        rng = np.random.default_rng(seed)
        g = np.arange(len(labels)) if groups is None else np.asarray(groups)
        uniq = np.unique(g)
        members = {u: np.flatnonzero(g == u) for u in uniq}
        boots = []
        for _ in range(n_boot):
            pick = rng.choice(uniq, size=len(uniq), replace=True)
            idx = np.concatenate([members[u] for u in pick])
            boots.append(hit[idx].mean())
        out["coverage_ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        out["ci_method"] = (f"{n_boot} bootstrap resamples of "
                            + ("women" if groups is not None else "patches"))
    return out


def set_words(names: Sequence[str], level: float, label=None) -> str:
    """``"90 % set: baseline, mass_benign"`` (``label`` maps a class name to its display words)."""
    show = label or (lambda n: n)
    body = ", ".join(show(n) for n in names) if names else "empty (unlike every class at this level)"
    return f"{100 * level:.0f} % set: {body}"


def is_uncertain(names: Sequence[str]) -> bool:
    """A set of more than one class, or none, reads as uncertain."""
    return len(names) != 1
