"""Batched prediction over model bundles.

A bundle is loaded once (hash-checked against its card and, for bundles under the models
folder, against ``MANIFEST.json``; Keras ``safe_mode=True``) into a :class:`LoadedModel`.
:func:`predict_arrays` runs every model once per batch over a float32 ``(N, 150, 150, 1)``
array and returns the softmax probabilities per model name.

The models of a call run together through one cached ``tf.function``
(:class:`mammo_core.forward.SharedForward`, fixed input signature, batch dimension ``None``):
a batch costs one graph call per view and no retracing, and layers the models have in common
(the bundled members' identical frozen VGG16 blocks 1-4) are computed once for all of them,
which is exact. This is what ``model.predict`` does internally, minus its per-call data-adapter
set-up, so per-batch calls (needed for progress and cancel) stay as fast as one
``model.predict`` over the whole array (``benchmarks/bench_inference.py`` measures the ratio).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammo_core import explain, forward
from mammo_core.bundle import (
    CARD_FILE,
    MANIFEST_FILE,
    BundleInfo,
    inspect_keras_archive,
    iter_bundles,
    load_model,
    outputs_problem,
    read_manifest,
    verify_bundle,
)
from mammo_core.confidence import quality_from_card, question_qualities
from mammo_core.contract import INPUT_SHAPE
from mammo_core.engine import Engine
from mammo_core.errors import BundleError, MammoError
from mammo_core.predictions import HeldOut, ModelRecord
from mammo_core.tta import N_VIEWS, check_tta, dihedral


@dataclass
class LoadedModel:
    """A verified bundle and its Keras model: in memory from the start, or (``_model`` None,
    :func:`load_bundle` with ``lazy=True``) loaded on first use of :attr:`model`, so that a
    prediction on a compiled engine whose graph is cached never imports TensorFlow."""

    info: BundleInfo
    _model: Any = None  # keras.Model, or None until first needed
    _shared: dict = field(default_factory=dict, repr=False)  # SharedForward by model set
    _load_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self) -> Any:
        """The Keras model (loaded now if it was not: TensorFlow is imported then)."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = _load_checked(self.info)
        return self._model

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def gradcam_layer(self) -> str | None:
        return self.info.gradcam_layer

    def gradcam(self, x: np.ndarray, class_index=None, method: str = "gradcam") -> np.ndarray:
        """Grad-CAM maps of ``x`` (:func:`mammo_core.explain.gradcam`) at the card's
        ``gradcam_layer`` (none named: the last convolution). A card naming a layer the model
        does not have is the card's error: one line naming the model and its card."""
        self.check_gradcam_layer()
        return explain.gradcam(self.model, x, class_index, method=method, layer=self.gradcam_layer)

    def check_gradcam_layer(self) -> None:
        """Raise a one-line :class:`BundleError` (naming the card) when the card's
        ``gradcam_layer`` is not a layer of the model; checked by ``mammo models verify`` and by
        ``mammo predict --gradcam`` before it predicts."""
        layer = self.gradcam_layer
        if layer is None:
            return
        if self._model is None:  # the archive's config.json: no TensorFlow for a check
            names = _layer_names(inspect_keras_archive(self.info.model_path).config)
            found = layer in names
        else:
            try:
                self._model.get_layer(layer)
                found = True
            except ValueError:
                found = False
        if not found:
            raise BundleError(f"model {self.name!r}: the card's gradcam_layer {layer!r} is not a layer "
                              "of model.keras; no Grad-CAM for this model until the card is fixed",
                              self.info.path / CARD_FILE) from None

    @property
    def tta(self) -> str:
        """The card's test-time augmentation (``inference.tta``: ``none`` or ``dihedral8``)."""
        return self.info.card.inference.tta

    def features(self, x: np.ndarray, layer: str, batch_size: int = 32,
                 engine: Engine | None = None) -> np.ndarray:
        """The output of ``layer`` (e.g. ``pooled_features``) for ``x``, the identity view only
        (what :mod:`mammo_core.ood` compares with the training patches), on ``engine`` (None:
        the Keras reference). One extra pass of the layers below it. Raises
        :class:`BundleError` when the model has no such layer."""
        x = _check_input(x)

        def make() -> forward.SharedForward:
            with _SHARED_LOCK:
                sub = self._shared.get(("features", layer))
            if sub is None:
                import keras

                try:
                    out = self.model.get_layer(layer).output
                except ValueError:
                    raise BundleError(f"model {self.name!r} has no layer {layer!r}", self.info.path) from None
                sub = forward.SharedForward([keras.Model(self.model.inputs, out)], share=False)
                with _SHARED_LOCK:
                    sub = self._shared.setdefault(("features", layer), sub)
            return sub

        if engine is None:
            run: Any = make()
        else:  # the cache key: the model file and the layer whose output is read
            sha = self.info.sha256
            run = engine.forward(make, [f"{sha}:{layer}" if sha else ""], owner=(self, layer),
                                 share=False)
        parts = [np.asarray(run(x[s:s + batch_size])[0], dtype=np.float64) for s in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, 0))

    def __call__(self, x: np.ndarray, tta: str | None = None) -> np.ndarray:
        """Probabilities for ``x``; with the card's TTA unless ``tta`` overrides it (``none`` /
        ``dihedral8``): then the mean over the 8 dihedral views (:mod:`mammo_core.tta`)."""

        x = _check_input(x)
        return predict_arrays([self], x, batch_size=max(1, len(x)), tta=tta)[self.name]


_SHARED_LOCK = threading.Lock()


def shared_forward(models: Sequence[LoadedModel]) -> forward.SharedForward:
    """The combined forward pass of ``models`` (built once per set of models, kept with the
    first of them), sharing identical layers unless ``mammo_core.forward.SHARE_LAYERS`` is
    False."""
    share = forward.SHARE_LAYERS
    # the pass holds the Keras models, so their ids stay theirs while it is cached
    key = (share, *(id(m.model) for m in models))
    with _SHARED_LOCK:
        fwd = models[0]._shared.get(key)
        if fwd is None:
            fwd = models[0]._shared[key] = forward.SharedForward([m.model for m in models], share)
    return fwd


def _runner(models: Sequence[LoadedModel], engine: Engine | None, precision: str | None):
    if engine is None:
        return shared_forward(models)
    models = list(models)
    return engine.forward(lambda: shared_forward(models), [m.info.sha256 or "" for m in models],
                          precision, owner=models, share=forward.SHARE_LAYERS)


def is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def check_bundle(bundle_dir: str | Path, models_dir: str | Path | None = None) -> BundleInfo:
    """Verify a bundle's files: against its card, and against the manifest when the bundle
    lives directly in ``models_dir`` (a bundle given by a path elsewhere: card only)."""
    bundle_dir = Path(bundle_dir)
    manifest = None
    if models_dir is not None and bundle_dir.parent.resolve() == Path(models_dir).resolve():
        manifest = read_manifest(models_dir)
    return verify_bundle(bundle_dir, manifest)


def find_bundle(name_or_path: str | Path, models_dir: str | Path) -> Path:
    """The folder of a bundle named ``name_or_path`` in ``models_dir``, or the path itself when
    it is a folder. A clear error listing the bundled names otherwise."""
    p = Path(name_or_path)
    models_dir = Path(models_dir)
    names = {}
    for sub, info in iter_bundles(models_dir):
        if isinstance(info, BundleInfo):
            names[info.name] = sub
        else:
            names.setdefault(sub.name, sub)
    if str(name_or_path) in names:
        return names[str(name_or_path)]
    if p.is_dir():
        return p
    avail = ", ".join(names) or f"none (no bundles in {models_dir})"
    raise BundleError(f"no bundle called {str(name_or_path)!r}; bundled: {avail}", models_dir)


def load_bundle(bundle_dir: str | Path, models_dir: str | Path | None = None,
                lazy: bool = False) -> LoadedModel:
    """Verify then load a model bundle (``kind == "model"``); ``lazy``: verify its files now
    and load the Keras model on first use (:class:`LoadedModel`)."""
    info = check_bundle(bundle_dir, models_dir)
    if info.kind != "model":
        raise BundleError(f"bundle {info.name!r} is a {info.kind!r}, not a model", info.path)
    return LoadedModel(info) if lazy else LoadedModel(info, _load_checked(info))


def _layer_names(config: Any) -> set[str]:
    """Every layer name in a Keras model config (nested models included)."""
    out: set[str] = set()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("config"), dict) and isinstance(node["config"].get("name"), str) \
                    and "class_name" in node:
                out.add(node["config"]["name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _load_checked(info: BundleInfo) -> Any:
    """The Keras model of a verified bundle, with the input shape and outputs the card says."""
    model = load_model(info.path, verify=False)  # verified by check_bundle
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    if shape is not None and shape != INPUT_SHAPE:
        raise BundleError(f"model input is {shape}, expected {INPUT_SHAPE}", info.model_path)
    why = outputs_problem(info, int(model.output_shape[-1]))
    if why:  # verify_bundle reads it from config.json where it can; this is the loaded truth
        raise BundleError(why, info.path / CARD_FILE)
    return model


def _check_input(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
        raise MammoError(f"model input must be (N, {', '.join(map(str, INPUT_SHAPE))}), got {x.shape}")
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    return x


def predict_arrays(
    models: Sequence[LoadedModel],
    x: np.ndarray,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    tta: str | None = None,
    engine: Engine | None = None,
    precision: str | None = None,
) -> dict[str, np.ndarray]:
    """Softmax probabilities ``(N, n_classes)`` per model name; the models run together once
    per batch (:func:`shared_forward`: layers they have in common computed once), then once
    per extra view for those with test-time augmentation (the 8 dihedral views: each card's
    ``inference.tta`` unless ``tta`` given), averaged as :func:`mammo_core.tta.predict_tta` does.

    ``engine`` (:mod:`mammo_core.engine`; None: the Keras reference pass) runs the views at
    ``precision`` (None: the engine's); the views and their mean are the same on every engine.
    ``progress(done, total)`` is called after each batch; when ``cancel()`` returns True the
    loop stops and the arrays hold only the rows done so far.
    """
    x = _check_input(x)
    if batch_size < 1:
        raise MammoError(f"batch size must be at least 1, got {batch_size}")
    models = list(models)
    n = len(x)
    out = {m.name: np.empty((n, len(m.classes)), dtype=np.float64) for m in models}
    done = 0
    if not models:
        return out
    modes = [m.tta if tta is None else check_tta(tta) for m in models]
    every = _runner(models, engine, precision)          # view 0: every model
    multi = [m for m, mode in zip(models, modes) if mode == "dihedral8"]
    turned = _runner(multi, engine, precision) if multi else None  # views 1-7: the TTA models only
    for start in range(0, n, batch_size):
        if cancel is not None and cancel():
            break
        xb = x[start:start + batch_size]
        views = {m.name: [p] for m, p in zip(models, every(xb))}
        for k in range(1, N_VIEWS if turned is not None else 1):
            for m, p in zip(multi, turned(dihedral(xb, k))):
                views[m.name].append(p)
        for name, ps in views.items():
            # the mean over the views as mammo_core.tta.predict_tta takes it (float64)
            out[name][start:start + len(xb)] = (
                np.asarray(ps[0], dtype=np.float64) if len(ps) == 1
                else np.mean([np.asarray(p, dtype=np.float64) for p in ps], axis=0))
        done = start + len(xb)
        if progress is not None:
            progress(done, n)
    if done < n:
        out = {k: v[:done] for k, v in out.items()}
    return out


def probabilities_by_class(classes: Sequence[str], row: np.ndarray) -> dict[str, float]:
    return {c: float(p) for c, p in zip(classes, row)}


def manifest_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / MANIFEST_FILE


def bundle_summary(info: BundleInfo) -> ModelRecord:
    """Name, version, sha256, task, classes of a bundle and its measured held-out quality from
    the card (``heldout``; an ensemble also gives ``heldout_questions``, one per question) --
    the report's ``models`` entry."""
    return ModelRecord(
        info.name, info.version, info.sha256, info.task, tuple(info.classes), info.kind,
        HeldOut.from_json(quality_from_card(info.card).to_dict()),
        {q.question or "": HeldOut.from_json(q.to_dict()) for q in question_qualities(info.card)})
