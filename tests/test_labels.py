import numpy as np
import pytest

from mammo_core.errors import MammoError
from mammo_core.labels import CLASS_NAMES, TASKS, class_counts, get_task


def test_canonical_names_in_label_order():
    assert CLASS_NAMES == (
        "baseline", "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant"
    )


@pytest.mark.parametrize(
    "task,expected_keep,expected",
    [
        ("mass_calc", [0, 1, 1, 1, 1], [0, 0, 1, 1]),
        ("benign_malignant", [0, 1, 1, 1, 1], [0, 1, 0, 1]),
        ("baseline_mass_calc", [1, 1, 1, 1, 1], [0, 1, 1, 2, 2]),
        ("five_class", [1, 1, 1, 1, 1], [0, 1, 2, 3, 4]),
    ],
)
def test_task_remaps(task, expected_keep, expected):
    keep, mapped = get_task(task).map_labels(np.arange(5))
    assert keep.tolist() == [bool(k) for k in expected_keep]
    assert mapped.tolist() == expected


def test_task_classes():
    assert TASKS["mass_calc"].classes == ("mass", "calcification")
    assert TASKS["benign_malignant"].classes == ("benign", "malignant")
    assert TASKS["baseline_mass_calc"].classes == ("baseline", "mass", "calcification")
    assert TASKS["five_class"].classes == CLASS_NAMES


def test_unknown_task_and_bad_labels_are_clear_errors():
    with pytest.raises(MammoError, match="unknown task 'nope'.*mass_calc"):
        get_task("nope")
    with pytest.raises(MammoError, match="0..4"):
        get_task("mass_calc").map_labels(np.array([1, 7]))


def test_class_counts_names_every_class():
    assert class_counts(np.array([0, 1, 1, 4])) == {
        "baseline": 1, "mass_benign": 2, "mass_malignant": 0,
        "calcification_benign": 0, "calcification_malignant": 1,
    }


def test_label_groups_agree_with_the_names_and_tasks():
    from mammo_core import labels as L

    names = dict(L.LABEL_TO_NAME)
    assert all(names[i].startswith("mass") for i in L.MASS_LABELS)
    assert all(names[i].startswith("calcification") for i in L.CALC_LABELS)
    assert all(names[i].endswith("_malignant") for i in L.MALIGNANT_LABELS)
    assert sorted(L.ABNORMAL_LABELS) == [i for i in names if i != L.BASELINE_LABEL]
    mc, bm = L.get_task("mass_calc"), L.get_task("benign_malignant")
    assert {mc.remap[i] for i in L.MASS_LABELS} == {mc.classes.index("mass")}
    assert {bm.remap[i] for i in L.MALIGNANT_LABELS} == {bm.classes.index("malignant")}
    # every factor a task estimates is defined on labels that task sees
    for task, factors in L.TASK_FACTORS.items():
        for f in factors:
            _rows, positive = L.FACTOR_LABELS[f]
            assert set(positive) <= set(L.get_task(task).remap)
    assert L.task_factors("benign_malignant", "mass") == ("malignant_given_mass",)
    with pytest.raises(MammoError, match="cannot join an ensemble"):
        L.task_factors("nope")


def test_one_pair_layout_check():
    from mammo_core import io
    from mammo_core.datasets import splits
    from mammo_core.labels import has_pair_layout

    assert io.pairs_ok is has_pair_layout and splits.has_pair_layout is has_pair_layout
    assert has_pair_layout(np.array([0, 3, 0, 1]))
    for bad in (None, np.array([]), np.array([0, 3, 0]), np.array([3, 0]), np.array([0, 0]),
                np.zeros((2, 2), int)):
        assert not has_pair_layout(bad)
