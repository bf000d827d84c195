"""The facade the Qt viewer and ``mammo predict`` share: one code path from bundles to reports.

``available()`` reads cards only (no TensorFlow import). ``load()`` verifies and loads the
bundles (heavy: call it from a worker thread). ``predict()`` runs every loaded model once per
batch and combines the ensemble; ``explain()`` gives Grad-CAM maps; ``export()`` writes a CSV,
JSON or PDF report through :mod:`mammo_core.report`. Research use only — not a medical device.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mammo_core import DISCLAIMER, __version__, explain
from mammo_core.bundle import BundleInfo, iter_bundles, read_card, read_manifest
from mammo_core.engine import Engine, EngineInfo, EngineSettings
from mammo_core.ensemble import _factors_of, apply_temperature, combine, member_class_for, member_dirs, read_ensemble
from mammo_core.ensemble.store import read_reference
from mammo_core.errors import BundleError, MammoError
from mammo_core.explain import finish_map, gradcam_shared, tissue_mask, weighted_mean
from mammo_core.inference import bundle_summary, find_bundle, load_bundle, predict_arrays
from mammo_core.io import ReadFailure, read_patches, to_model_input
from mammo_core.labels import CLASS_NAMES
from mammo_core.ood import ACQ_STATS, FeatureReference, acquisition_stats, background_share
from mammo_core.ood import checks as ood_checks
from mammo_core.paths import models_dir as default_models_dir
from mammo_core.predictions import (
    ENSEMBLE,
    EnsembleRecord,
    MemberRecord,
    ModelOutput,
    PatchPrediction,
    Provenance,
    default_target,
    patch_key,
)
from mammo_core.report import PredictionRun, write_report

if TYPE_CHECKING:  # pragma: no cover
    from mammo_core.ensemble import EnsembleSpec
    from mammo_core.inference import LoadedModel
    from mammo_core.io import Patch, ReadFailure

def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _failure(source: str | Path, error: str):
    return ReadFailure(str(source), error)


@dataclass
class _Ensemble:
    info: BundleInfo
    spec: EnsembleSpec
    reference: FeatureReference | None = None  # OOD feature reference (mammo_core.ood)


#: Member probabilities kept per model input (``Session.predict``) for the heatmap's default
#: target and weights (``Session.explain_all``): the numbers on screen, without a second pass.
PROBS_KEPT = 4096


def _input_key(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


@dataclass
class _State:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    ensemble: _Ensemble | None = None
    # (engine settings, input sha256) -> {member: probabilities row}, most recent last
    probs: OrderedDict[tuple[Any, str], dict[str, np.ndarray]] = field(default_factory=OrderedDict)


class Session:
    """Loaded bundles and what can be done with them (thread-safe for one worker at a time)."""

    def __init__(self, models_dir: Path | str | None = None,
                 engine: EngineSettings | Engine | None = None):
        self.models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        self._state = _State()
        self._lock = threading.RLock()
        self.engine = engine if isinstance(engine, Engine) else Engine(engine or EngineSettings())

    def set_engine(self, settings: EngineSettings) -> None:
        """Predict with another engine / precision from now on (the viewer's setting)."""
        with self._lock:
            if settings != self.engine.settings:
                self.engine = Engine(settings, self.engine.cache)

    def engine_info(self, precision: str | None = None) -> EngineInfo:
        """The engine, version and precision that compute (or computed) the predictions."""
        return self.engine.info(precision)

    # ------------------------------------------------------------------ reading
    @staticmethod
    def read(paths, recursive: bool = False, bits: int | None = None):
        """Read patches as ``mammo predict`` does (``io.read_patches``): ``bits`` (1-16) says
        how many bits 16-bit PNG / TIFF / ``.npy`` containers really hold (DICOM uses its
        BitsStored); each patch keeps the depth it is scaled by (``Patch.bits``)."""
        return read_patches(paths, recursive=recursive, bits=bits)

    # ------------------------------------------------------------------ cards only
    def available(self) -> list[BundleInfo]:
        """Cards of the bundles in the models folder (models first, then ensembles). Fast: no
        hash check, no TensorFlow. Unreadable cards are skipped (``mammo models verify`` names them)."""
        out = [info for _sub, info in iter_bundles(self.models_dir) if isinstance(info, BundleInfo)]
        return sorted(out, key=lambda i: (i.kind != "model", i.name))

    # ------------------------------------------------------------------ loading
    def _resolve(self, name: str) -> Path:
        if name == ENSEMBLE:
            ens = [i for i in self.available() if i.kind == "ensemble"]
            if not ens:
                raise BundleError("no ensemble bundle here; choose a model by name: "
                                  + (", ".join(i.name for i in self.available()) or "none bundled"),
                                  self.models_dir)
            by_name = [i for i in ens if i.name == ENSEMBLE]
            return (by_name or ens)[0].path
        return find_bundle(name, self.models_dir)

    def _manifest_for(self, path: Path):
        if path.resolve().parent == self.models_dir.resolve():
            return read_manifest(self.models_dir)
        return None

    def load(self, names: list[str] | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> list[ReadFailure]:
        """Verify and load bundles (by name in the models folder, or by folder path); an
        ensemble brings its members. ``names`` default: every bundle in the models folder.
        Already loaded bundles are kept. Returns the bundles that failed (one line each)."""
        failures = []
        if names is None:
            names = [i.name for i in self.available()]
            if not names:
                raise BundleError("no model bundles found (run a training script or pass a "
                                  "bundle folder)", self.models_dir)
        model_paths: dict[str, Path] = {}
        ensemble_pending: list[tuple[BundleInfo, Any, dict[str, Path]]] = []
        for name in names:
            try:
                path = self._resolve(name)
                info = read_card(path)
                if info.kind == "ensemble":
                    einfo, spec = read_ensemble(path, self._manifest_for(path))
                    members = member_dirs(spec, path.parent)
                    ensemble_pending.append((einfo, spec, members))
                    for mname, mpath in members.items():
                        model_paths.setdefault(mname, mpath)
                else:
                    model_paths.setdefault(info.name, path)
            except MammoError as err:
                failures.append(_failure(name, str(err)))
        total = len(model_paths)
        failed_models = set()
        for i, (mname, mpath) in enumerate(model_paths.items()):
            if progress is not None:
                progress(i, total, mname)
            with self._lock:
                if mname in self._state.models:
                    continue
            try:
                lm = load_bundle(mpath, self.models_dir if self._manifest_for(mpath) is not None else None,
                                 lazy=True)
                if lm.name != mname:
                    raise BundleError(f"card name {lm.name!r} differs from expected {mname!r}", mpath)
                with self._lock:
                    self._state.models[mname] = lm
            except MammoError as err:  # one line: the file at fault, then the problem
                failures.append(_failure(err.path or mpath, err.problem))
                failed_models.add(mname)
        for einfo, spec, members in ensemble_pending:
            missing = [m for m in members if m in failed_models]
            if missing:
                failures.append(_failure(einfo.path, f"ensemble not loaded: member(s) {', '.join(missing)} failed"))
                continue
            try:
                ref = read_reference(einfo, spec)
            except MammoError as err:
                failures.append(_failure(err.path or einfo.path, err.problem))
                continue
            with self._lock:
                self._state.ensemble = _Ensemble(einfo, spec, ref)
        if progress is not None:
            progress(total, total, "")
        return failures

    def gradcam_problems(self) -> list[str]:
        """One line per loaded model whose card names a Grad-CAM layer the model lacks."""
        with self._lock:
            models = list(self._state.models.values())
        problems = []
        for lm in models:
            try:
                lm.check_gradcam_layer()
            except MammoError as err:
                problems.append(str(err))
        return problems

    def unload(self) -> None:
        with self._lock:
            self._state = _State()

    @property
    def loaded(self) -> list[str]:
        with self._lock:
            names = list(self._state.models)
            if self._state.ensemble is not None:
                names.append(ENSEMBLE)
            return names

    @property
    def ensemble_spec(self) -> EnsembleSpec | None:
        return None if self._state.ensemble is None else self._state.ensemble.spec

    def model_name(self, name: str) -> str:
        """A loaded model's own name: the alias ``"ensemble"`` becomes the loaded ensemble
        bundle's name (the name reports use); other names are returned as given."""
        with self._lock:
            ens = self._state.ensemble
        return ens.info.name if name == ENSEMBLE and ens is not None else name

    def info(self, name: str) -> BundleInfo:
        name = self.model_name(name)
        with self._lock:
            if self._state.ensemble is not None and name == self._state.ensemble.info.name:
                return self._state.ensemble.info
            if name in self._state.models:
                return self._state.models[name].info
        raise MammoError(f"model {name!r} is not loaded (loaded: {', '.join(self.loaded) or 'none'})")

    # ------------------------------------------------------------------ prediction
    def predict(self, patches: Sequence[Patch], batch_size: int = 32,
                progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> list[PatchPrediction]:
        """Predict every patch with every loaded model (all of them in one pass per batch and
        view, identical layers computed once: :mod:`mammo_core.forward`) and the ensemble.
        ``progress(done, total)`` after each batch; when ``cancel()`` returns True, stops and
        returns the predictions of the patches done so far."""
        with self._lock:
            models = list(self._state.models.values())
            ens = self._state.ensemble
        if not models:
            raise MammoError("no model loaded")
        if batch_size < 1:
            raise MammoError(f"batch size must be at least 1, got {batch_size}")
        patches = list(patches)
        n = len(patches)
        probs = {m.name: np.empty((n, len(m.classes))) for m in models}
        background = np.empty(n)
        ospec = None if ens is None else ens.spec.ood
        probe = None
        if ospec is not None and ospec.feature_member is not None and ens.reference is not None:
            probe = next((m for m in models if m.name == ospec.feature_member), None)
        distance = np.empty(n) if probe is not None else None
        limits = None if ens is None or ens.reference is None else ens.reference.acquisition
        acq = np.empty((n, len(ACQ_STATS))) if limits is not None else None
        done = 0
        for s in range(0, n, batch_size):
            if cancel is not None and cancel():
                break
            chunk = patches[s:s + batch_size]
            x = to_model_input(chunk)
            part = predict_arrays(models, x, batch_size=len(chunk), engine=self.engine)
            for k, v in part.items():
                probs[k][s:s + len(chunk)] = v
            self._keep_probs(x, part)
            background[s:s + len(chunk)] = background_share(x)
            if acq is not None:
                acq[s:s + len(chunk)] = acquisition_stats(x)
            if probe is not None:
                distance[s:s + len(chunk)] = ens.reference.distance(
                    probe.features(x, ospec.feature_layer, batch_size=len(chunk), engine=self.engine))
            done = s + len(chunk)
            if progress is not None:
                progress(done, n)
        probs = {k: v[:done] for k, v in probs.items()}
        res = combine(ens.spec, probs) if ens is not None and done else None
        checks = ood_checks(ospec, background[:done], None if distance is None else distance[:done],
                            None if limits is None or acq is None else (limits, acq[:done]))
        out = []
        for i in range(done):
            per = {}
            for m in models:
                row = probs[m.name][i]
                per[m.name] = ModelOutput(m.name, m.task, {c: float(p) for c, p in zip(m.classes, row)},
                                          m.classes[int(np.argmax(row))])
            e_out, unc, flag, ent, cset, level = None, None, False, None, None, None
            if res is not None:
                row = res.probabilities[i]
                e_out = ModelOutput(ens.info.name, "five_class",
                                    {c: float(p) for c, p in zip(CLASS_NAMES, row)},
                                    res.predicted[i])
                unc = None if res.disagreement is None else float(res.disagreement[i])
                flag = bool(res.flagged[i])
                ent = float(res.entropy[i])
                if res.sets is not None:
                    cset = tuple(c for c, k in zip(CLASS_NAMES, res.sets[i]) if k)
                    level = res.level
            p = patches[i]
            ref = getattr(p, "source_ref", None)
            out.append(PatchPrediction(p.source, p.index, p.sha256, per, e_out, unc, flag, ent,
                                       getattr(p, "bits", None), None if ref is None else ref.to_json(),
                                       cset, level, checks[i]))
        return out

    def _keep_probs(self, x: np.ndarray, part: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            kept, settings = self._state.probs, self.engine.settings
            for i in range(len(x)):
                key = (settings, _input_key(x[i]))
                kept[key] = {k: np.array(v[i]) for k, v in part.items()}
                kept.move_to_end(key)
            while len(kept) > PROBS_KEPT:
                kept.popitem(last=False)

    def _member_probs(self, models: Sequence[LoadedModel], x: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities of ``models`` for the one input ``x`` (1, 150, 150, 1) on the session's
        engine with each card's TTA: those :meth:`predict` computed for the same input on the
        same engine settings when it did (the numbers on screen), else one pass now."""
        key = (self.engine.settings, _input_key(x[0]))
        with self._lock:
            hit = self._state.probs.get(key)
        if hit is not None and all(m.name in hit for m in models):
            return {m.name: hit[m.name][None, :] for m in models}
        return predict_arrays(list(models), x, batch_size=1, engine=self.engine)

    # ------------------------------------------------------------------ P(abnormal) only
    def abnormal_members(self) -> list[str]:
        """The loaded models that estimate P(baseline) (hence P(abnormal) = 1 - P(baseline)):
        with an ensemble, its members that estimate the hierarchy's ``baseline`` factor (the
        ensemble's P(abnormal) depends on these alone); without one, every loaded model with a
        ``baseline`` class. Fastest first (smallest model file)."""
        with self._lock:
            ens = self._state.ensemble
            models = dict(self._state.models)
        if ens is not None:
            names = [m.name for m in ens.spec.members if "baseline" in _factors_of(m)]
        else:
            names = [n for n, m in models.items() if "baseline" in m.classes]

        def size(n: str) -> int:
            try:
                return (models[n].info.path / "model.keras").stat().st_size
            except (OSError, KeyError, AttributeError):
                return 0
        return sorted(names, key=size)

    def tta_of(self, name: str) -> str:
        """The test-time augmentation a loaded model's card asks for (``none`` / ``dihedral8``)."""
        with self._lock:
            return self._state.models[name].tta

    def p_abnormal(self, pixels: np.ndarray, members: Sequence[str] | None = None,
                   batch_size: int = 64, tta: str | None = None,
                   precision: str | None = None) -> np.ndarray:
        """P(abnormal) of a stack of patches ``(N, 150, 150)`` (uint8 / uint16 / float [0, 1]):
        the ensemble's ``1 - P(baseline)`` (temperature scaling and fitted weights as in
        :meth:`predict`), computed from ``members`` only (default: every member that estimates
        P(baseline), which gives exactly the ensemble's value; a subset is an approximation, to
        be stated). Without an ensemble: the mean ``1 - P(baseline)`` of ``members``. ``tta``
        overrides each card's test-time augmentation (``"none"``: one view, 8x cheaper than
        ``dihedral8``; ``None``: as each card says, the ensemble's exact value). ``precision``
        overrides the engine's (the map's own precision, :data:`mammo_core.engine.MAP_PRECISION`)."""
        usable = self.abnormal_members()
        if not usable:
            raise MammoError("no loaded model estimates P(baseline): the abnormality map needs a "
                             "baseline_mass_calc or five_class model (or an ensemble with one)")
        chosen = list(members if members else usable)
        bad = [m for m in chosen if m not in usable]
        if bad:
            raise MammoError(f"model(s) {', '.join(bad)} give no P(baseline); choose among "
                             f"{', '.join(usable)}")
        with self._lock:
            models = [self._state.models[n] for n in chosen]
        x = to_model_input(np.asarray(pixels))
        if len(x) == 0:
            return np.zeros(0)
        probs = predict_arrays(models, x, batch_size=batch_size, tta=tta, engine=self.engine,
                               precision=precision)
        return self.p_abnormal_of(probs)

    def p_abnormal_of(self, probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(abnormal) from the probabilities ``{member: (N, classes)}`` of members that
        estimate P(baseline) (however they were computed: :meth:`p_abnormal`'s pass, or the dense
        map, :mod:`mammo_core.dense_map`): the ensemble's ``1 - P(baseline)`` restricted to those
        members (temperatures and weights as in :meth:`predict`), or without an ensemble the
        mean ``1 - P(baseline)`` of the members."""
        import dataclasses

        with self._lock:
            models = [self._state.models[n] for n in probs]
            ens = self._state.ensemble
        if ens is not None:
            spec = dataclasses.replace(ens.spec, members=tuple(m for m in ens.spec.members
                                                               if m.name in probs))
            return 1.0 - np.asarray(combine(spec, dict(probs)).factors["baseline"], dtype=np.float64)
        return np.mean([1.0 - probs[m.name][:, list(m.classes).index("baseline")] for m in models],
                       axis=0)

    def loaded_model(self, name: str) -> LoadedModel:
        """A loaded model (its Keras graph and card), e.g. for the dense map."""
        with self._lock:
            if name not in self._state.models:
                raise MammoError(f"model {name!r} is not loaded (loaded: {', '.join(self.loaded) or 'none'})")
            return self._state.models[name]

    # ------------------------------------------------------------------ Grad-CAM
    def _target_index(self, lm: LoadedModel, patch: Patch, target: str | None) -> int | None:
        if target is None:
            return None
        if target in lm.classes:
            return lm.classes.index(target)
        mapped = member_class_for(lm.task, target)
        if mapped is None:
            raise MammoError(f"model {lm.name!r} ({lm.task}) has no class for target {target!r}; "
                             f"its classes: {', '.join(lm.classes)}")
        return lm.classes.index(mapped)

    def explain_all(self, patch: Patch, model: str = ENSEMBLE, method: str = "gradcam",
                    target: str | None = None) -> dict[str, np.ndarray]:
        """Grad-CAM maps of one patch: ``{model: map}`` for a model; for the ensemble each
        member's map (for the member's class that contains the target, default the ensemble's
        most likely abnormal class, :func:`~mammo_core.predictions.default_target`)
        and, under ``"ensemble"``, their mean weighted by each member's
        (temperature-scaled) probability of that class. Every map is normalised per patch to a
        maximum of 1 with the background (below the tissue threshold) set to 0
        (:func:`mammo_core.explain.finish_map`). Members that cannot express the target
        (e.g. target ``baseline`` for a mass_calc member) are left out."""
        x = to_model_input(patch)
        with self._lock:
            ens = self._state.ensemble
            models = dict(self._state.models)
        if model == ENSEMBLE or (ens is not None and self.model_name(model) == ens.info.name):
            if ens is None:
                raise MammoError(f"no ensemble loaded (loaded: {', '.join(self.loaded) or 'none'})")
            # every member's probabilities on the session's engine (shared trunk, each card's
            # TTA; kept from predict() when it ran on this input): the target (default the most
            # likely abnormal class) and the map weights
            probs = self._member_probs([models[m.name] for m in ens.spec.members], x)
            if target is None:
                p5 = combine(ens.spec, probs).probabilities[0]
                target = default_target(ModelOutput(ens.info.name, "five_class",
                                                    dict(zip(CLASS_NAMES, map(float, p5))), ""))
            if target not in CLASS_NAMES:
                raise MammoError(f"unknown target {target!r} for the ensemble; choose one of "
                                 f"{', '.join(CLASS_NAMES)}")
            maps, weights, out = [], [], {}
            chosen = []  # (member, its loaded model, class index)
            for m in ens.spec.members:
                lm = models[m.name]
                cls = member_class_for(lm.task, target)
                if cls is not None:
                    chosen.append((m, lm, lm.classes.index(cls)))
            if method == "gradcam" and explain.COMPILED_GRADCAM and len(chosen) > 1:
                # one forward pass for every member (their shared trunk once), then each
                # member's gradient: the same maps as one Grad-CAM per member
                for _m, lm, _ci in chosen:
                    lm.check_gradcam_layer()
                hms = [h[0] for h in gradcam_shared([lm.model for _m, lm, _ci in chosen],
                                                    [lm.gradcam_layer for _m, lm, _ci in chosen], x,
                                                    [ci for _m, _lm, ci in chosen])]
            else:
                hms = [lm.gradcam(x, ci, method=method)[0] for _m, lm, ci in chosen]
            for (m, _lm, ci), hm in zip(chosen, hms):
                out[m.name] = hm
                maps.append(hm)
                weights.append(apply_temperature(probs[m.name], m.temperature)[0, ci])
            # per-patch [0, 1] again (a weighted mean of maps peaking in different places
            # would otherwise never reach 1), background masked out
            out[ENSEMBLE] = finish_map(weighted_mean(maps, weights), tissue_mask(x[0]))
            return out
        if model not in models:
            raise MammoError(f"model {model!r} is not loaded (loaded: {', '.join(self.loaded) or 'none'})")
        lm = models[model]
        ci = self._target_index(lm, patch, target)
        return {model: lm.gradcam(x, ci, method=method)[0]}

    def explain(self, patch: Patch, model: str = ENSEMBLE, method: str = "gradcam",
                target: str | None = None) -> np.ndarray:
        """One Grad-CAM map (150, 150) float32 in [0, 1] (see :meth:`explain_all`)."""
        maps = self.explain_all(patch, model, method, target)
        key = ENSEMBLE if ENSEMBLE in maps else model
        return maps[key]

    # ------------------------------------------------------------------ provenance / export
    def provenance_record(self) -> Provenance:
        """Software version, disclaimer, time, and every loaded model's name, version, hashes."""
        with self._lock:
            models = [bundle_summary(m.info) for m in self._state.models.values()]
            ens = self._state.ensemble
        record = None
        if ens is not None:
            models.append(bundle_summary(ens.info))
            record = EnsembleRecord(
                ens.info.name, ens.spec.threshold, ens.spec.threshold_rule, ens.spec.weighting,
                ens.spec.calibration, ens.spec.coverage,
                tuple(MemberRecord(m.name, m.sha256, m.task, m.temperature, m.weight)
                      for m in ens.spec.members))
        return Provenance(__version__, DISCLAIMER, _now(), tuple(models), record,
                          engine=self.engine_info().to_json())

    def provenance(self) -> dict:
        """:meth:`provenance_record` as the report's JSON object."""
        return self.provenance_record().to_json()

    def export(self, path: Path, fmt: str, patches: Sequence[Patch],
               predictions: Sequence[PatchPrediction],
               heatmaps: Mapping[tuple[str, str], np.ndarray] | None = None,
               errors: Sequence[ReadFailure] = (),
               heatmap_paths: Mapping[tuple[str, str], str] | None = None,
               heatmap_meta: Mapping[tuple[str, str], Mapping[str, str]] | None = None) -> Path:
        """Write a report (``fmt`` csv | json | pdf) atomically; ``heatmaps`` maps
        ``(patch key, model)`` to a map, where the patch key is :func:`patch_key` (``source`` or
        ``source#index``; the patch's sha256 is accepted too); ``heatmap_meta`` gives the same
        keys' ``{"target": class, "method": ...}`` (default: the model's predicted class).
        Returns the path."""
        run = PredictionRun(
            predictions=list(predictions),
            provenance=self.provenance_record(),
            errors=list(errors),
            patches=list(patches),
            heatmaps=dict(heatmaps or {}),
            heatmap_paths=dict(heatmap_paths or {}),
            heatmap_meta=dict(heatmap_meta or {}),
        )
        return write_report(Path(path), fmt, run)


# the prediction types moved to mammo_core.predictions; importing them from here still works
__all__ = ["ENSEMBLE", "ModelOutput", "PatchPrediction", "Session", "patch_key"]
