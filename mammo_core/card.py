"""The bundle card (``<bundle>/card.json``): a typed, versioned document with one reader
(:meth:`Card.from_dict`, via :func:`parse_card`) and one writer (:meth:`Card.to_dict`, via
:func:`card_json`), symmetric like :class:`mammo_core.ensemble.EnsembleSpec`.

Schema ``mammo.card/2``. A card of schema ``mammo.card/1`` (or without a schema) is migrated on
read (:func:`migrate`): its flat per-question AUCs (``auc_<question>``, ``..._ci95``, ``..._n``)
become ``metrics.questions``, and a training split's ``validation`` description becomes
``split.how``. Every part of the card is typed; the parts that are a *record of what was done*
(hyper-parameters, architecture options, per-fold rows, output spreads, the data statement) are
kept as JSON objects (:data:`Record`). Reading refuses, in one line naming the card file, a
missing required key, a value of the wrong type and any key this schema does not know (a
renamed key is an error, never a silently "not measured" number).

No TensorFlow here. Research use only — not a medical device.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar, TypeVar

from mammo_core.errors import BundleError
from mammo_core.labels import get_task
from mammo_core.tta import TTA_MODES

CARD_FILE = "card.json"
MODEL_FILE = "model.keras"
CARD_SCHEMA = "mammo.card/2"
OLD_CARD_SCHEMAS = ("mammo.card/1",)  # migrated on read (a card without a schema is /1)
KINDS = ("model", "ensemble")
REQUIRED_CARD_KEYS = ("name", "kind", "task", "classes", "version", "files")

#: A JSON object kept as read: a record of what was done (not interpreted by the code).
Record = Mapping[str, object]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_T = TypeVar("_T")
_U = TypeVar("_U")


def plain_name(name: object) -> bool:
    """A bundle or file name without any path in it (letters, digits, ``._+-``)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and name not in (".", "..")


# --------------------------------------------------------------------------- reading helpers

def _finite(v: object) -> float | None:
    """``v`` as a finite float; None for anything else (a bool, a string, NaN, 10**400)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer beyond float range
        return None
    return f if math.isfinite(f) else None


class _Obj:
    """One JSON object of a card being read: typed getters that remember which keys were read;
    :meth:`done` refuses every key that was not (unknown to the schema)."""

    def __init__(self, value: object, where: str, path: str | Path):
        if not isinstance(value, Mapping):
            raise BundleError(f"card {where} must be a JSON object", path)
        self.d: Mapping[str, object] = value
        self.where = where
        self.path = path
        self.seen: set[str] = set()

    def _name(self, key: str) -> str:
        return key if self.where == "card" else f"{self.where}.{key}"

    def fail(self, key: str, what: str) -> BundleError:
        return BundleError(f"card {self._name(key)} {what}", self.path)

    def raw(self, key: str, required: bool = False) -> object:
        self.seen.add(key)
        if key not in self.d:
            if required:
                raise BundleError(f"card lacks {self._name(key)}", self.path)
            return None
        return self.d[key]

    def text(self, key: str, required: bool = False) -> str | None:
        v = self.raw(key, required)
        if v is None or isinstance(v, str):
            return v
        raise self.fail(key, "must be a string")

    def flag(self, key: str) -> bool | None:
        v = self.raw(key)
        if v is None or isinstance(v, bool):
            return v
        raise self.fail(key, "must be true or false")

    def number(self, key: str) -> float | None:
        v = self.raw(key)
        if v is None:
            return None
        f = _finite(v)
        if f is None:
            raise self.fail(key, "must be a finite number")
        return f

    def count(self, key: str) -> int | None:
        v = self.raw(key)
        if v is None or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        raise self.fail(key, "must be a whole number")

    def texts(self, key: str, required: bool = False) -> tuple[str, ...] | None:
        v = self.raw(key, required)
        if v is None:
            return None
        if isinstance(v, list) and all(isinstance(s, str) for s in v):
            return tuple(v)
        raise self.fail(key, "must be a list of strings")

    def interval(self, key: str) -> tuple[float, float] | None:
        v = self.raw(key)
        if v is None:
            return None
        if isinstance(v, list) and len(v) == 2:
            if None in v:  # not estimable on that split (a bootstrap with one class): no interval
                return None
            lo, hi = _finite(v[0]), _finite(v[1])
            if lo is not None and hi is not None:
                return lo, hi
        raise self.fail(key, "must be [low, high] (finite numbers)")

    def record(self, key: str) -> dict[str, object] | None:
        v = self.raw(key)
        if v is None:
            return None
        if isinstance(v, Mapping):
            return dict(v)
        raise self.fail(key, "must be a JSON object")

    def records(self, key: str) -> tuple[dict[str, object], ...] | None:
        v = self.raw(key)
        if v is None:
            return None
        if isinstance(v, list) and all(isinstance(r, Mapping) for r in v):
            return tuple(dict(r) for r in v)
        raise self.fail(key, "must be a list of JSON objects")

    def obj(self, key: str) -> _Obj | None:
        v = self.raw(key)
        return None if v is None else _Obj(v, self._name(key), self.path)

    def done(self) -> None:
        unknown = [k for k in self.d if k not in self.seen]
        if unknown:
            raise BundleError(f"card has unknown key {self._name(str(unknown[0]))!r} (schema {CARD_SCHEMA}; "
                              "a renamed or misspelt key?)", self.path)


def _compact(pairs: Iterable[tuple[str, object]]) -> dict[str, object]:
    """The JSON object of ``pairs`` without the absent (None) values."""
    return {k: v for k, v in pairs if v is not None}


def _list(v: tuple[object, ...] | None) -> list[object] | None:
    return None if v is None else list(v)


# --------------------------------------------------------------------------- the parts

@dataclass(frozen=True)
class InputContract:
    """What the model takes: shape (None = any batch), dtype, value range, how pixels are scaled."""

    shape: tuple[int | None, ...]
    dtype: str
    range: tuple[float, float]
    scaling: str

    @classmethod
    def from_dict(cls, o: _Obj) -> InputContract:
        shape = o.raw("shape", required=True)
        if not isinstance(shape, list) or not all(s is None or (isinstance(s, int) and not isinstance(s, bool))
                                                  for s in shape):
            raise o.fail("shape", "must be a list of sizes (null for any)")
        rng = o.interval("range")
        if rng is None:
            raise BundleError(f"card lacks {o.where}.range", o.path)
        out = cls(tuple(shape), o.text("dtype", True) or "", rng, o.text("scaling", True) or "")
        o.done()
        return out

    def to_dict(self) -> dict[str, object]:
        return {"shape": list(self.shape), "dtype": self.dtype, "range": list(self.range), "scaling": self.scaling}


#: The input contract of every bundled model (a bundle is self-contained: the model normalises).
INPUT_CONTRACT = InputContract(
    (None, 150, 150, 1), "float32", (0.0, 1.0),
    "pixels / (2**bits - 1) by the image's true bit depth (DICOM BitsStored, else the 8- or 16-bit "
    "container or --bits): uint8 / 255, 12-bit / 4095, uint16 / 65535; normalisation happens inside the model")


@dataclass(frozen=True)
class Inference:
    """How the model is run: test-time augmentation (``none`` or ``dihedral8``)."""

    tta: str = "none"
    tta_note: str | None = None

    @classmethod
    def from_dict(cls, o: _Obj) -> Inference:
        tta = o.text("tta") or "none"
        if tta not in TTA_MODES:
            raise o.fail("tta", f"{tta[:20]!r} is not one of {', '.join(TTA_MODES)}")
        out = cls(tta, o.text("tta_note"))
        o.done()
        return out

    def to_dict(self) -> dict[str, object]:
        return _compact([("tta", self.tta), ("tta_note", self.tta_note)])


@dataclass(frozen=True)
class Question:
    """One question's AUC (ensemble cards: ``abnormal_vs_baseline``, ``mass_vs_calcification``,
    ``benign_vs_malignant``) with its 95 % interval and the number of patches it was measured on.
    ``auc`` None: not estimable on that split."""

    auc: float | None
    ci95: tuple[float, float] | None = None
    n: int | None = None

    @classmethod
    def from_dict(cls, o: _Obj) -> Question:
        out = cls(o.number("auc"), o.interval("ci95"), o.count("n"))
        o.done()
        return out

    def to_dict(self) -> dict[str, object]:
        return {"auc": self.auc, **_compact([("ci95", _list(self.ci95)), ("n", self.n)])}


_METRIC_FLOATS = ("accuracy", "auc", "auc_hard_labels", "f1_macro", "ece", "nll", "score",
                  "flagged_fraction", "accuracy_unflagged", "accuracy_flagged")


@dataclass(frozen=True)
class Metrics:
    """Numbers measured on one split (``split``; ``measured`` says when), with how: the AUC and
    its 95 % interval (``auc_ci_method``), per-question AUCs (``questions``), calibration (ECE,
    NLL), the confusion matrix and the output spread. ``blind`` is False when the split had been
    seen before a change to the model (``not_blind_because`` says how)."""

    split: str | None = None
    measured: str | None = None
    blind: bool = True
    not_blind_because: str | None = None
    smoke: bool | None = None
    task: str | None = None
    classes: tuple[str, ...] | None = None
    n: int | None = None
    accuracy: float | None = None
    auc: float | None = None
    auc_ci95: tuple[float, float] | None = None
    auc_ci_method: str | None = None
    auc_hard_labels: float | None = None
    f1_macro: float | None = None
    ece: float | None = None
    nll: float | None = None
    score: float | None = None
    flagged_fraction: float | None = None
    accuracy_unflagged: float | None = None
    accuracy_flagged: float | None = None
    confusion_matrix: tuple[tuple[int, ...], ...] | None = None
    spread: Record | None = None
    questions: Mapping[str, Question] = field(default_factory=dict)
    note: str | None = None
    blind_stated: bool = field(default=False, compare=False, repr=False)  # "blind" written

    @classmethod
    def from_dict(cls, o: _Obj) -> Metrics:
        blind = o.flag("blind")
        cm = o.raw("confusion_matrix")
        if cm is not None and not (isinstance(cm, list) and all(
                isinstance(r, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in r) for r in cm)):
            raise o.fail("confusion_matrix", "must be a list of rows of counts")
        qs = o.obj("questions")
        questions: dict[str, Question] = {}
        if qs is not None:
            for q in qs.d:
                sub = qs.obj(str(q))
                assert sub is not None
                questions[str(q)] = Question.from_dict(sub)
            qs.done()
        out = cls(
            split=o.text("split"), measured=o.text("measured"), blind=blind is not False,
            not_blind_because=o.text("not_blind_because"), smoke=o.flag("smoke"), task=o.text("task"),
            classes=o.texts("classes"), n=o.count("n"), auc_ci95=o.interval("auc_ci95"),
            auc_ci_method=o.text("auc_ci_method"),
            confusion_matrix=None if cm is None else tuple(tuple(r) for r in cm),
            spread=o.record("spread"), questions=questions, note=o.text("note"), blind_stated=blind is not None,
            **{k: o.number(k) for k in _METRIC_FLOATS})
        o.done()
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, object], path: str | Path = CARD_FILE) -> Metrics:
        """Metrics from a flat row of numbers (``auc_<question>``, ``auc_<question>_ci95``,
        ``auc_<question>_n`` become :attr:`questions`), as the comparison tables give them."""
        return cls.from_dict(_Obj(_nest_questions(row), "metrics", path))

    def to_dict(self) -> dict[str, object]:
        out = _compact([("split", self.split), ("measured", self.measured)])
        if self.blind_stated or not self.blind:
            out["blind"] = self.blind
        out.update(_compact([
            ("not_blind_because", self.not_blind_because), ("smoke", self.smoke), ("task", self.task),
            ("classes", _list(self.classes)), ("n", self.n), ("accuracy", self.accuracy), ("auc", self.auc),
            ("auc_ci95", _list(self.auc_ci95)), ("auc_ci_method", self.auc_ci_method)]))
        out.update(_compact((k, getattr(self, k)) for k in _METRIC_FLOATS if k not in ("accuracy", "auc")))
        out.update(_compact([
            ("confusion_matrix", None if self.confusion_matrix is None else [list(r) for r in self.confusion_matrix]),
            ("spread", None if self.spread is None else dict(self.spread))]))
        if self.questions:
            out["questions"] = {q: v.to_dict() for q, v in self.questions.items()}
        return {**out, **_compact([("note", self.note)])}

    def merged(self, newer: Metrics) -> Metrics:
        """These metrics with every value ``newer`` states replacing this one's."""
        over = {f.name: getattr(newer, f.name) for f in fields(self)
                if f.name not in ("blind", "blind_stated", "questions") and getattr(newer, f.name) is not None}
        return replace(self, **over, questions={**self.questions, **newer.questions})


def _nest_questions(flat: Mapping[str, object]) -> dict[str, object]:
    """A flat metrics row (schema /1: ``auc_<q>``, ``auc_<q>_ci95``, ``auc_<q>_n``) with its
    per-question AUCs moved under ``questions`` (schema /2)."""
    known = {f.name for f in fields(Metrics)}
    out: dict[str, object] = {}
    questions: dict[str, dict[str, object]] = {}
    for key, value in flat.items():
        if key in known or not key.startswith("auc_"):
            out[key] = value
            continue
        q, part = key[len("auc_"):], "auc"
        for suffix, name in (("_ci95", "ci95"), ("_n", "n")):
            if q.endswith(suffix):
                q, part = q[: -len(suffix)], name
        questions.setdefault(q, {})[part] = value
    for parts in questions.values():
        parts.setdefault("auc", None)
    if questions:
        out["questions"] = {**questions, **dict(out.get("questions") or {})}  # type: ignore[call-overload]
    return out


@dataclass(frozen=True)
class TrainingData:
    """The training data: folder, sha256 of each array file, patches per class and split."""

    path: str | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    smoke_subset: Mapping[str, int] | None = None

    @classmethod
    def from_dict(cls, o: _Obj) -> TrainingData:
        sha = o.record("sha256") or {}
        if not all(isinstance(v, str) for v in sha.values()):
            raise o.fail("sha256", "must map file names to sha256")
        counts = o.record("counts") or {}
        if not all(isinstance(c, Mapping) and all(isinstance(n, int) for n in c.values()) for c in counts.values()):
            raise o.fail("counts", "must map splits to {class: count}")
        smoke = o.record("smoke_subset")
        out = cls(o.text("path"), {str(k): str(v) for k, v in sha.items()},
                  {str(s): dict(c) for s, c in counts.items()},  # type: ignore[call-overload]
                  None if smoke is None else {str(k): int(v) for k, v in smoke.items()})  # type: ignore[call-overload]
        o.done()
        return out

    def to_dict(self) -> dict[str, object]:
        return _compact([("path", self.path), ("sha256", dict(self.sha256)),
                         ("counts", {s: dict(c) for s, c in self.counts.items()}),
                         ("smoke_subset", None if self.smoke_subset is None else dict(self.smoke_subset))])


@dataclass(frozen=True)
class Split:
    """How the training patches were split: sizes, validation fraction and seed of a grouped
    split, or the folds of a k-fold protocol; ``grouped_by`` patient or pair; ``how`` in words."""

    train: int | None = None
    validation: int | None = None
    validation_fraction: float | None = None
    seed: int | None = None
    folds: int | None = None
    fold_seed: int | None = None
    grouped_by: str | None = None
    held_out: str | None = None
    how: str | None = None

    @classmethod
    def from_dict(cls, o: _Obj) -> Split:
        out = cls(o.count("train"), o.count("validation"), o.number("validation_fraction"), o.count("seed"),
                  o.count("folds"), o.count("fold_seed"), o.text("grouped_by"), o.text("held_out"), o.text("how"))
        o.done()
        return out

    def to_dict(self) -> dict[str, object]:
        return _compact((f.name, getattr(self, f.name)) for f in fields(self))


@dataclass(frozen=True)
class Training:
    """How the model was made: data, split, protocol (the hyper-parameters, kept as a record),
    the out-of-fold / validation numbers, the command line. An ensemble gives ``method``, its
    ``validation`` record and ``held_out`` instead of data and split."""

    command: str | None = None
    data: TrainingData | None = None
    split: Split | None = None
    protocol: Record = field(default_factory=dict)
    subset: str | None = None
    oof: Metrics | None = None
    validation_metrics: Record | None = None
    validation_spread: Record | None = None
    folds: tuple[Record, ...] | None = None
    grid: tuple[Record, ...] | None = None
    method: str | None = None
    validation: Record | None = None
    held_out: str | None = None

    @classmethod
    def from_dict(cls, o: _Obj) -> Training:
        data, split, oof = o.obj("data"), o.obj("split"), o.obj("oof")
        out = cls(
            command=o.text("command"), data=None if data is None else TrainingData.from_dict(data),
            split=None if split is None else Split.from_dict(split), protocol=o.record("protocol") or {},
            subset=o.text("subset"), oof=None if oof is None else Metrics.from_dict(oof),
            validation_metrics=o.record("validation_metrics"), validation_spread=o.record("validation_spread"),
            folds=o.records("folds"), grid=o.records("grid"), method=o.text("method"),
            validation=o.record("validation"), held_out=o.text("held_out"))
        o.done()
        return out

    def to_dict(self) -> dict[str, object]:
        return _compact([
            ("method", self.method), ("data", None if self.data is None else self.data.to_dict()),
            ("split", None if self.split is None else self.split.to_dict()),
            ("protocol", dict(self.protocol) or None), ("subset", self.subset), ("validation", self.validation),
            ("held_out", self.held_out), ("oof", None if self.oof is None else self.oof.to_dict()),
            ("validation_metrics", self.validation_metrics), ("validation_spread", self.validation_spread),
            ("folds", _list(self.folds)), ("grid", _list(self.grid)), ("command", self.command)])

    @property
    def smoke(self) -> bool:
        """Trained with ``--smoke`` (a few patches per class)."""
        return self.protocol.get("smoke") is True


# --------------------------------------------------------------------------- the card

@dataclass(frozen=True)
class Card:
    """A bundle's card (schema :data:`CARD_SCHEMA`). Read with :func:`parse_card` (checks and
    migrates), written with :func:`card_json`; ``Card.from_dict(card.to_dict()) == card``."""

    name: str
    kind: str
    task: str
    classes: tuple[str, ...]
    version: str
    files: Mapping[str, str]
    sha256: str | None = None
    schema: str = CARD_SCHEMA
    architecture: Record | None = None
    inference: Inference = field(default_factory=Inference)
    training: Training = field(default_factory=Training)
    metrics: Metrics = field(default_factory=Metrics)
    out_of_fold: Metrics | None = None
    gradcam_layer: str | None = None
    coverage: Mapping[str, bool] | None = None
    notes: tuple[str, ...] = ()
    disclaimer: str | None = None
    input: InputContract | None = None
    created: str | None = None
    software: Mapping[str, str] | None = None
    training_data: Record | None = None
    kfold: str | None = None

    SCHEMA: ClassVar[str] = CARD_SCHEMA

    @classmethod
    def from_dict(cls, d: Mapping[str, object], path: str | Path = CARD_FILE) -> Card:
        """Check and read a card (a /1 card is migrated first); :class:`BundleError` in one line
        naming ``path`` for a missing required key, a wrong type or an unknown key."""
        o = _Obj(d, "card", path)
        missing = [k for k in REQUIRED_CARD_KEYS if k not in o.d]
        if missing:
            raise BundleError(f"card lacks {', '.join(missing)}", path)
        schema = o.text("schema")
        if schema is None or schema in OLD_CARD_SCHEMAS:
            o = _Obj(migrate(o.d), "card", path)
            o.text("schema")
        elif schema != CARD_SCHEMA:
            raise BundleError(f"card schema {schema[:40]!r} is not {CARD_SCHEMA} (nor an older one this "
                              "version migrates)", path)
        card = cls(
            name=_name(o), kind=_kind(o), task=o.text("task", True) or "", classes=o.texts("classes", True) or (),
            version=_version(o), files=_files(o), sha256=o.text("sha256"), architecture=o.record("architecture"),
            inference=Inference.from_dict(o.obj("inference") or _Obj({}, "inference", path)),
            training=Training.from_dict(o.obj("training") or _Obj({}, "training", path)),
            metrics=Metrics.from_dict(o.obj("metrics") or _Obj({}, "metrics", path)),
            out_of_fold=_opt(o.obj("out_of_fold"), Metrics.from_dict), gradcam_layer=o.text("gradcam_layer"),
            coverage=_coverage(o), notes=o.texts("notes") or (), disclaimer=o.text("disclaimer"),
            input=_opt(o.obj("input"), InputContract.from_dict), created=o.text("created"),
            software=_software(o), training_data=o.record("training_data"), kfold=o.text("kfold"))
        o.done()
        card.check(path)
        return card

    def check(self, path: str | Path = CARD_FILE) -> None:
        """The checks across fields: task one of ``labels.py`` and classes exactly its classes; a
        plain name; ``files`` plain names inside the bundle mapped to sha256; ``sha256`` that of
        the main file."""
        if not plain_name(self.name):
            raise BundleError(f"card name {self.name[:60]!r} is not a plain name (letters, digits, ._+-)", path)
        try:
            task = get_task(self.task)
        except Exception:  # noqa: BLE001 - unknown task, whatever labels.py raises
            raise BundleError(f"card task {self.task[:40]!r} is not a known task", path) from None
        if self.classes != tuple(task.classes):
            raise BundleError(f"card classes {list(self.classes[:8])} are not the classes of task {task.name!r} "
                              f"({', '.join(task.classes)}, in that order)", path)
        if not self.files:
            raise BundleError("card 'files' must map file names to sha256", path)
        for fname, digest in self.files.items():
            if not plain_name(fname) or fname == CARD_FILE:
                raise BundleError(f"card 'files' entry {str(fname)[:60]!r} is not a plain file name inside "
                                  "the bundle", path)
            if not isinstance(digest, str) or not _HEX_RE.match(digest):
                raise BundleError(f"card 'files' entry {fname!r}: {str(digest)[:20]!r} is not a sha256 hex digest",
                                  path)
        if self.kind == "model" and MODEL_FILE not in self.files:
            raise BundleError(f"card 'files' does not list {MODEL_FILE}", path)
        if self.sha256 is not None and self.sha256 != self.files[self.main_file]:
            raise BundleError(f"card sha256 {self.sha256[:12]}... differs from its 'files' entry for "
                              f"{self.main_file} ({self.files[self.main_file][:12]}...)", path)

    def to_dict(self) -> dict[str, object]:
        """The card as JSON, under the schema's names (absent parts left out)."""
        return _compact([
            ("schema", self.schema), ("name", self.name), ("kind", self.kind), ("task", self.task),
            ("classes", list(self.classes)), ("version", self.version), ("architecture", self.architecture),
            ("inference", self.inference.to_dict() or None), ("training", self.training.to_dict() or None),
            ("metrics", self.metrics.to_dict()), ("out_of_fold", _opt(self.out_of_fold, Metrics.to_dict)),
            ("gradcam_layer", self.gradcam_layer), ("coverage", None if self.coverage is None else dict(self.coverage)),
            ("notes", list(self.notes) if self.notes else None), ("disclaimer", self.disclaimer),
            ("input", _opt(self.input, InputContract.to_dict)), ("created", self.created),
            ("software", None if self.software is None else dict(self.software)),
            ("files", dict(self.files)), ("sha256", self.sha256), ("training_data", self.training_data),
            ("kfold", self.kfold)])

    @property
    def main_file(self) -> str:
        """The file whose sha256 names the bundle: ``model.keras``, else the first listed."""
        return MODEL_FILE if MODEL_FILE in self.files else next(iter(self.files))

    def headline_metric(self) -> tuple[str, float] | None:
        """The held-out number ``mammo models list`` shows: the AUC, else the accuracy."""
        if self.metrics.auc is not None:
            return "auc", self.metrics.auc
        if self.metrics.accuracy is not None:
            return "accuracy", self.metrics.accuracy
        return None


def _opt(v: _T | None, fn: Callable[[_T], _U]) -> _U | None:
    return None if v is None else fn(v)


def _name(o: _Obj) -> str:
    name = o.raw("name", True)
    if not plain_name(name):
        raise BundleError(f"card name {str(name)[:60]!r} is not a plain name (letters, digits, ._+-)", o.path)
    return str(name)


def _kind(o: _Obj) -> str:
    kind = o.raw("kind", True)
    if kind not in KINDS:
        raise BundleError(f"card kind {str(kind)[:40]!r} is not one of {', '.join(KINDS)}", o.path)
    return str(kind)


def _version(o: _Obj) -> str:
    v = o.raw("version", True)
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise BundleError("card version must be a string", o.path)
    return str(v)


def _files(o: _Obj) -> dict[str, str]:
    files = o.raw("files", True)
    if not isinstance(files, Mapping) or not files:
        raise BundleError("card 'files' must map file names to sha256", o.path)
    return dict(files)


def _coverage(o: _Obj) -> dict[str, bool] | None:
    cov = o.record("coverage")
    if cov is not None and not all(isinstance(v, bool) for v in cov.values()):
        raise o.fail("coverage", "must map factors to true or false")
    return None if cov is None else {str(k): bool(v) for k, v in cov.items()}


def _software(o: _Obj) -> dict[str, str] | None:
    sw = o.record("software")
    if sw is not None and not all(isinstance(v, str) for v in sw.values()):
        raise o.fail("software", "must map package names to versions")
    return None if sw is None else {str(k): str(v) for k, v in sw.items()}


def migrate(d: Mapping[str, object]) -> dict[str, object]:
    """A ``mammo.card/1`` card (or one without a schema) in the ``mammo.card/2`` layout: flat
    per-question AUCs of ``metrics`` / ``out_of_fold`` / ``training.oof`` under ``questions``; a
    training split's ``validation`` text as ``how``. Other keys are kept (and checked by the
    reader like any /2 card)."""
    out = dict(d)
    out["schema"] = CARD_SCHEMA
    for key in ("metrics", "out_of_fold"):
        if isinstance(out.get(key), Mapping):
            out[key] = _nest_questions(out[key])  # type: ignore[arg-type]
    training = out.get("training")
    if isinstance(training, Mapping):
        tr = dict(training)
        if isinstance(tr.get("oof"), Mapping):
            tr["oof"] = _nest_questions(tr["oof"])
        split = tr.get("split")
        if isinstance(split, Mapping) and isinstance(split.get("validation"), str):
            sp = dict(split)
            sp["how"] = sp.pop("validation")
            tr["split"] = sp
        out["training"] = tr
    return out


def parse_card(d: Mapping[str, object], path: str | Path = CARD_FILE) -> Card:
    """The one reader: :meth:`Card.from_dict`."""
    return Card.from_dict(d, path)


def card_json(card: Card) -> dict[str, object]:
    """The one writer's JSON object; checked by reading it back (a writer cannot produce a card
    the reader refuses)."""
    d = card.to_dict()
    if Card.from_dict(d, CARD_FILE) != card:
        raise BundleError(f"card {card.name!r} does not read back as written (a bug in the writer)", CARD_FILE)
    return d


__all__ = ["CARD_FILE", "CARD_SCHEMA", "INPUT_CONTRACT", "KINDS", "MODEL_FILE", "OLD_CARD_SCHEMAS",
           "REQUIRED_CARD_KEYS", "Card", "Inference", "InputContract", "Metrics", "Question", "Record",
           "Split", "Training", "TrainingData", "card_json", "migrate", "parse_card", "plain_name"]
