"""The acquisition-shift bench's paired intervals (issue 24): each shifted row's change from the
unshifted one with a 95 % interval over women, and the shift table that shows it.
Research use only — not a medical device."""
from __future__ import annotations

import numpy as np

from mammo_core.ensemble_fit import TASK_AUCS
from mammo_core.training.shift_eval import shift_delta_ci, table_markdown


def _five_class(labels: np.ndarray, strength: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(5), len(labels))
    p[np.arange(len(labels)), labels] += strength
    return p / p.sum(axis=1, keepdims=True)


def test_a_shift_that_changes_nothing_has_a_zero_interval_and_a_damaging_one_a_negative_interval():
    labels = np.tile(np.arange(5), 30)
    groups = np.arange(len(labels)) // 5  # 30 women with one patch of every class
    good = _five_class(labels, 2.0, 0)
    same = shift_delta_ci(labels, good, good, groups, n_boot=120)
    assert set(same) == set(TASK_AUCS) and all(v == (0.0, 0.0) for v in same.values())
    worse = shift_delta_ci(labels, good, _five_class(labels, 0.0, 1), groups, n_boot=120)
    lo, hi = worse["auc_abnormal_vs_baseline"]
    assert lo <= hi < -0.2


def test_table_shows_the_change_and_its_interval_only_when_measured():
    rows = [{"shift": "none", "auc_abnormal_vs_baseline": 0.84, "auc_mass_vs_calcification": 0.85,
             "auc_benign_vs_malignant": 0.79, "ood_any": 0.02, "ood_background": 0.0},
            {"shift": "scale_0.8", "auc_abnormal_vs_baseline": 0.67, "auc_mass_vs_calcification": 0.69,
             "auc_benign_vs_malignant": 0.69, "ood_any": 0.8, "ood_background": 0.02,
             "delta_ci95": {"auc_abnormal_vs_baseline": (-0.23, -0.11)}}]
    md = table_markdown({"rows": rows})
    assert "95 % interval over women" in md and "| -0.170 (-0.230 to -0.110) |" in md
    assert md.splitlines()[2].split(" | ")[2] == "—"  # the unshifted row has no change
    old = table_markdown({"rows": [{k: v for k, v in r.items() if k != "delta_ci95"} for r in rows]})
    assert "interval" not in old and old.splitlines()[3].startswith("| scale_0.8 | 0.670 | 0.690 |")


def test_models_md_states_the_worst_shift_its_interval_and_whether_the_target_is_met():
    from test_training_scripts import load_script

    mod = load_script("models_table")
    rows = [{"shift": "none", "auc_abnormal_vs_baseline": 0.843},
            {"shift": "gamma_2", "auc_abnormal_vs_baseline": 0.74,
             "delta_ci95": {"auc_abnormal_vs_baseline": (-0.2, 0.0)}},
            {"shift": "scale_0.8", "auc_abnormal_vs_baseline": 0.671,
             "delta_ci95": {"auc_abnormal_vs_baseline": (-0.228, -0.105)}}]
    line = mod._worst_shift_line({"rows": rows})[0]
    assert "`scale_0.8` 0.671 (change -0.172, 95 % interval over women -0.228 to -0.105)" in line
    assert "is NOT met" in line
    near = mod._worst_shift_line({"rows": [rows[0], {"shift": "blur_1px", "auc_abnormal_vs_baseline": 0.82}]})[0]
    assert "is met" in near and "interval" not in near
