"""The one place for the 0-4 label map, the study's tasks, their class names and remaps.

Labels of the CBIS-DDSM patch arrays:
    0 baseline, 1 mass benign, 2 mass malignant, 3 calcification benign,
    4 calcification malignant.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from mammo_core.errors import MammoError

BASELINE, MASS_BENIGN, MASS_MALIGNANT, CALC_BENIGN, CALC_MALIGNANT = 0, 1, 2, 3, 4
BASELINE_LABEL = BASELINE

# Label groups (0-4 labels)
MASS_LABELS: tuple[int, ...] = (MASS_BENIGN, MASS_MALIGNANT)
CALC_LABELS: tuple[int, ...] = (CALC_BENIGN, CALC_MALIGNANT)
MALIGNANT_LABELS: tuple[int, ...] = (MASS_MALIGNANT, CALC_MALIGNANT)
ABNORMAL_LABELS: tuple[int, ...] = MASS_LABELS + CALC_LABELS
#: The abnormality types a benign_malignant member may be trained on alone.
SUBSET_LABELS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"mass": MASS_LABELS, "calcification": CALC_LABELS})

# The ensemble's hierarchy: P(baseline), then P(mass | abnormal), then P(malignant | mass) and
# P(malignant | calcification). Each factor: (the labels it is defined on, None = every patch;
# the labels for which it is 1).
FACTOR_LABELS: Mapping[str, tuple[tuple[int, ...] | None, tuple[int, ...]]] = MappingProxyType({
    "baseline": (None, (BASELINE,)),
    "mass_given_abnormal": (ABNORMAL_LABELS, MASS_LABELS),
    "malignant_given_mass": (MASS_LABELS, (MASS_MALIGNANT,)),
    "malignant_given_calcification": (CALC_LABELS, (CALC_MALIGNANT,)),
})
FACTORS: tuple[str, ...] = tuple(FACTOR_LABELS)
#: Which hierarchy factors a member of each task estimates.
TASK_FACTORS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mass_calc": ("mass_given_abnormal",),
    "benign_malignant": ("malignant_given_mass", "malignant_given_calcification"),
    "baseline_mass_calc": ("baseline", "mass_given_abnormal"),
    "five_class": FACTORS,
})
#: The factor a benign_malignant member trained on one abnormality type estimates.
SUBSET_FACTOR: Mapping[str, str] = MappingProxyType(
    {"mass": "malignant_given_mass", "calcification": "malignant_given_calcification"})

CLASS_NAMES: tuple[str, ...] = (
    "baseline",
    "mass_benign",
    "mass_malignant",
    "calcification_benign",
    "calcification_malignant",
)
LABEL_TO_NAME: Mapping[int, str] = MappingProxyType(dict(enumerate(CLASS_NAMES)))
NAME_TO_LABEL: Mapping[str, int] = MappingProxyType({n: i for i, n in enumerate(CLASS_NAMES)})
N_LABELS = len(CLASS_NAMES)


@dataclass(frozen=True)
class Task:
    """A classification task of the study: its classes and how 0-4 labels map onto them.

    ``remap[label]`` is the task's class index; labels absent from ``remap`` are not part of
    the task (for example baselines in ``mass_calc``) and are dropped.
    """

    name: str
    classes: tuple[str, ...]
    remap: Mapping[int, int]
    description: str = ""
    study_section: str = ""
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lut = np.full(N_LABELS, -1, dtype=np.int64)
        for label, cls in self.remap.items():
            lut[label] = cls
        object.__setattr__(self, "_lut", lut)
        object.__setattr__(self, "remap", MappingProxyType(dict(self.remap)))

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def uses_baseline(self) -> bool:
        return BASELINE in self.remap

    def map_labels(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(keep_mask, task_labels)`` for an array of 0-4 labels.

        ``keep_mask`` marks the labels that belong to the task; ``task_labels`` holds the task
        class index of each kept label (so ``len(task_labels) == keep_mask.sum()``).
        """
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= N_LABELS):
            raise MammoError(f"labels must be in 0..{N_LABELS - 1}, got {labels.min()}..{labels.max()}")
        mapped = self._lut[labels.astype(np.int64)]
        keep = mapped >= 0
        return keep, mapped[keep]


TASKS: Mapping[str, Task] = MappingProxyType(
    {
        "mass_calc": Task(
            "mass_calc",
            ("mass", "calcification"),
            {MASS_BENIGN: 0, MASS_MALIGNANT: 0, CALC_BENIGN: 1, CALC_MALIGNANT: 1},
            "abnormality type: mass vs calcification (baselines dropped)",
            "2.1 / 3.1",
        ),
        "benign_malignant": Task(
            "benign_malignant",
            ("benign", "malignant"),
            {MASS_BENIGN: 0, MASS_MALIGNANT: 1, CALC_BENIGN: 0, CALC_MALIGNANT: 1},
            "pathology: benign vs malignant (baselines dropped)",
            "2.2 / 3.2",
        ),
        "baseline_mass_calc": Task(
            "baseline_mass_calc",
            ("baseline", "mass", "calcification"),
            {BASELINE: 0, MASS_BENIGN: 1, MASS_MALIGNANT: 1, CALC_BENIGN: 2, CALC_MALIGNANT: 2},
            "baseline tissue vs mass vs calcification",
            "4",
        ),
        "five_class": Task(
            "five_class",
            CLASS_NAMES,
            {i: i for i in range(N_LABELS)},
            "all five labels",
            "5",
        ),
    }
)


def get_task(name: str) -> Task:
    """The task called ``name``; a clear error listing the valid names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise MammoError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def task_factors(task: str, subset: str | None = None) -> tuple[str, ...]:
    """The hierarchy factors a member of ``task`` (trained on ``subset`` only, if given)
    estimates; a clear error for a task that cannot join an ensemble."""
    if task == "benign_malignant" and subset is not None:
        return (SUBSET_FACTOR[subset],)
    try:
        return TASK_FACTORS[task]
    except KeyError:
        raise MammoError(f"task {task!r} cannot join an ensemble") from None


def has_pair_layout(labels: np.ndarray | None) -> bool:
    """True when the labels follow the CBIS-DDSM pair layout: baseline (0) at every even index
    and an abnormality (1-4) at the odd index right after it."""
    if labels is None:
        return False
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.size % 2:
        return False
    return bool((labels[0::2] == BASELINE).all() and (labels[1::2] != BASELINE).all())


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Count 0-4 labels by canonical class name (every name present, zeros included)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=N_LABELS)
    return {name: int(counts[i]) for i, name in enumerate(CLASS_NAMES)}
