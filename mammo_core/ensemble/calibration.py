"""Temperature scaling and simplex weights, fitted on validation NLL (steps 1 and 2 of the
combination described in :mod:`mammo_core.ensemble`).

Research use only — not a medical device.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

T_BOUNDS = (0.05, 20.0)
EPS = 1e-12


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row-wise (T = 1 returns ``p`` renormalised)."""
    p = np.asarray(p, dtype=np.float64)
    z = np.log(np.clip(p, EPS, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], EPS, 1.0))))


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the NLL of ``softmax(log p / T)`` on (p, y)."""
    from scipy.optimize import minimize_scalar

    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(
        lambda logt: _nll(apply_temperature(p, np.exp(logt)), y),
        bounds=(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    # never worse than no scaling
    return t if _nll(apply_temperature(p, t), y) <= _nll(apply_temperature(p, 1.0), y) else 1.0


def fit_weights(ps: Sequence[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Simplex weights minimising the NLL of ``sum_i w_i p_i`` (soft voting) on (ps, y)."""
    from scipy.optimize import minimize

    k = len(ps)
    if k <= 1 or len(y) == 0:
        return np.full(k, 1.0 / max(k, 1))
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in ps])  # (k, N, C)
    y = np.asarray(y, dtype=np.int64)
    picked = stack[:, np.arange(len(y)), y]  # (k, N)

    def loss(z):
        w = np.exp(z - z.max())
        w /= w.sum()
        return float(-np.mean(np.log(np.clip(w @ picked, EPS, None))))

    res = minimize(loss, np.zeros(k), method="L-BFGS-B", bounds=[(-20, 20)] * k)
    w = np.exp(res.x - res.x.max())
    return w / w.sum()
