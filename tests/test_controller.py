"""The viewer's controller driven with a fake session: model states, the prediction cache,
the generation guard, run all (chunks, cancel), stale heatmaps cancelled through their worker,
export, errors with their traceback. No TensorFlow, no window."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.controllers.patches import HEAT_CACHE_SIZE, PatchController, RunAllJob, key_of
from app.service import ModelsState
from mammo_core.io import Patch
from mammo_core.predictions import ENSEMBLE, HeatKey, ModelOutput, PatchPrediction

pytestmark = pytest.mark.gui
WAIT = 10_000
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Info:
    name: str
    kind: str = "model"
    classes: tuple[str, ...] = ("mass", "calcification")


class FakeSession:
    """The part of mammo_core.session.Session the controller uses, without models."""

    def __init__(self, models_dir, infos=None, load_error=None, ensemble=False):
        self.models_dir = models_dir
        self.infos = [Info("m1")] if infos is None else list(infos)
        self.load_error = load_error
        self.ensemble = ensemble
        self.loaded: list[str] = []
        self.predict_calls: list[list[str]] = []
        self.explained: list[tuple] = []
        self.gate = threading.Event()
        self.gate.set()  # open unless a test closes it
        self.exported: list[tuple] = []

    def available(self):
        return self.infos

    def load(self, progress=None):
        if self.load_error is not None:
            raise self.load_error
        for i, info in enumerate(self.infos):
            if progress is not None:
                progress(i, len(self.infos), info.name)
        self.loaded = [i.name for i in self.infos] + ([ENSEMBLE] if self.ensemble else [])
        return []

    def _pred(self, patch):
        p = float(patch.pixels.mean() > 100)
        out = ModelOutput("m1", "mass_calc", {"mass": 1 - p, "calcification": p},
                          "calcification" if p else "mass")
        ens = (ModelOutput("ens_bundle", "five_class", {"baseline": 1.0}, "baseline")
               if self.ensemble else None)
        return PatchPrediction(patch.source, patch.index, patch.sha256, {"m1": out}, ens, None,
                               False)

    def predict(self, patches, progress=None, cancel=None):
        self.gate.wait(WAIT / 1000)
        self.predict_calls.append([key_of(p) for p in patches])
        out = []
        for p in patches:
            if cancel is not None and cancel():
                break
            out.append(self._pred(p))
            if progress is not None:
                progress(len(out), len(patches))
        return out

    def explain(self, patch, model, method, target):
        self.explained.append((key_of(patch), model, method, target))
        if model == "broken":
            raise ValueError("no gradient for this layer")
        return np.full((150, 150), 0.5, np.float32)

    def export(self, path, fmt, patches, preds, heatmaps=None, heatmap_meta=None):
        self.exported.append((path, fmt, [key_of(p) for p in patches], dict(heatmaps or {})))
        self.exported_meta = dict(heatmap_meta or {})
        Path(path).write_text(json.dumps({"n": len(preds), "fmt": fmt}))
        return Path(path)


def _patches(n, name="stack.npy"):
    rng = np.random.default_rng(0)
    return [Patch(rng.integers(0, 256, (150, 150), dtype=np.uint8), name, i) for i in range(n)]


@pytest.fixture
def make(qtbot, tmp_path):
    made: list[tuple[PatchController, list[FakeSession]]] = []

    def _make(**kwargs):
        sessions: list[FakeSession] = []

        def factory(models_dir):
            s = FakeSession(models_dir, **kwargs)
            sessions.append(s)
            return s

        c = PatchController(tmp_path / "models", session_factory=factory)
        made.append((c, sessions))
        return c, sessions

    yield _make
    for c, sessions in made:
        for s in sessions:
            s.gate.set()
        c.shutdown(10)


def _ready(qtbot, c):
    with qtbot.waitSignal(c.modelsLoaded, timeout=WAIT):
        c.start_models()
    assert c.state is ModelsState.READY


def _idle(qtbot, c):
    qtbot.waitUntil(lambda: not c.busy(), timeout=WAIT)


def test_models_state_goes_loading_then_ready(qtbot, make):
    c, _ = make()
    states, progress = [], []
    c.modelsStateChanged.connect(states.append)
    c.loadProgress.connect(lambda *a: progress.append(a))
    with qtbot.waitSignal(c.modelsLoaded, timeout=WAIT) as sig:
        c.start_models()
    assert states == [ModelsState.LOADING, ModelsState.READY]
    assert sig.args[0] == ["m1"] and sig.args[1] >= 0
    assert progress[0] == (0, 1, "m1")
    assert c.models_ready and c.state == "ready"  # a StrEnum: the old strings still compare


def test_no_bundles_and_unreadable_folder(qtbot, make, tmp_path):
    c, _ = make(infos=())
    c.start_models()
    assert c.state is ModelsState.NONE and not c.models_ready

    def broken(models_dir):
        raise PermissionError(f"{models_dir}: permission denied")

    c2 = PatchController(tmp_path, session_factory=broken)
    errors = []
    c2.errorOccurred.connect(lambda *a: errors.append(a))
    c2.start_models()
    assert c2.state is ModelsState.NONE and c2.session is None
    assert "permission denied" in errors[0][0] and errors[0][1] == "Models"
    c2.shutdown(5)


def test_load_error_becomes_failed_with_traceback(qtbot, make):
    c, _ = make(load_error=RuntimeError("model.keras: bad zip"))
    errors = []
    c.errorOccurred.connect(lambda *a: errors.append(a))
    with qtbot.waitSignal(c.modelsStateChanged, timeout=WAIT,
                          check_params_cb=lambda s: s is ModelsState.FAILED):
        c.start_models()
    qtbot.waitUntil(lambda: bool(errors), timeout=WAIT)
    text, title, details = errors[0]
    assert text == "Loading the models failed: model.keras: bad zip" and title == "Models"
    assert "Traceback" in details and "RuntimeError" in details and "in load" in details


def test_prediction_is_cached_and_asked_once(qtbot, make):
    c, sessions = make()
    _ready(qtbot, c)
    s = sessions[-1]
    p = _patches(1)[0]
    s.gate.clear()
    assert c.request_prediction(p)
    assert not c.request_prediction(p)  # on its way: not asked twice
    with qtbot.waitSignal(c.predictionsReady, timeout=WAIT) as sig:
        s.gate.set()
    assert list(sig.args[0]) == [key_of(p)] and c.prediction(key_of(p)) is not None
    assert not c.request_prediction(p)  # cached
    _idle(qtbot, c)
    assert s.predict_calls == [[key_of(p)]]


def test_results_of_older_models_are_dropped(qtbot, make):
    c, sessions = make()
    _ready(qtbot, c)
    old = sessions[0]
    old.gate.clear()
    p = _patches(1)[0]
    got = []
    c.predictionsReady.connect(got.append)
    c.request_prediction(p)
    qtbot.waitUntil(lambda: c.busy(), timeout=WAIT)
    with qtbot.waitSignal(c.modelsLoaded, timeout=WAIT):
        c.start_models()  # new models while the old prediction is still running
        old.gate.set()
    _idle(qtbot, c)
    qtbot.wait(50)
    assert got == [] and c.prediction(key_of(p)) is None  # the old answer never arrives
    assert c.request_prediction(p)  # and the patch can be asked again of the new models
    qtbot.waitUntil(lambda: c.prediction(key_of(p)) is not None, timeout=WAIT)
    assert sessions[1].predict_calls == [[key_of(p)]]


def test_run_all_in_chunks_skips_what_is_predicted(qtbot, make):
    c, sessions = make()
    _ready(qtbot, c)
    s = sessions[-1]
    patches = _patches(10)
    c.request_prediction(patches[4])
    qtbot.waitUntil(lambda: c.prediction(key_of(patches[4])) is not None, timeout=WAIT)
    c.run_all_chunk = 3
    progress = []
    c.runAllProgress.connect(lambda d, t: progress.append((d, t)))
    with qtbot.waitSignal(c.runAllFinished, timeout=WAIT) as sig:
        job = c.run_all(patches)
        assert c.run_all_active() and c.run_all(patches) is None  # one job at a time
    done = sig.args[0]
    assert isinstance(done, RunAllJob) and done is job
    assert done.total == 9 and done.done == 9 and not done.cancelled
    assert [len(k) for k in s.predict_calls[1:]] == [3, 3, 3]
    assert all(c.prediction(key_of(p)) is not None for p in patches)
    assert progress[-1] == (9, 9) and not c.run_all_active()
    with qtbot.waitSignal(c.runAllFinished, timeout=WAIT) as sig:
        c.run_all(patches)  # nothing left to do: finishes at once
    assert sig.args[0].total == 0


def test_run_all_cancel_stops_after_the_running_chunk(qtbot, make):
    c, sessions = make()
    _ready(qtbot, c)
    s = sessions[-1]
    patches = _patches(12)
    c.run_all_chunk = 4
    s.gate.clear()
    with qtbot.waitSignal(c.runAllFinished, timeout=WAIT) as sig:
        c.run_all(patches)
        assert c.cancel_run_all()
        s.gate.set()
    job = sig.args[0]
    assert job.cancelled and job.done < 12 and not c.run_all_active()
    assert not c.cancel_run_all()  # nothing runs any more


def test_run_all_error_is_reported_with_traceback(qtbot, make):
    c, sessions = make()
    _ready(qtbot, c)
    s = sessions[-1]

    def boom(*a, **k):
        raise MemoryError("out of memory in batch")

    s.predict = boom
    errors = []
    c.errorOccurred.connect(lambda *a: errors.append(a))
    with qtbot.waitSignal(c.runAllFinished, timeout=WAIT) as sig:
        c.run_all(_patches(3))
    assert sig.args[0].cancelled
    assert errors[0][0] == "Run all stopped: out of memory in batch"
    assert "MemoryError" in errors[0][2]


def test_heat_key_waits_for_the_predicted_class(qtbot, make):
    c, _ = make(ensemble=True)
    p = _patches(1)[0]
    assert c.heat_key(p, "m1", "gradcam", "mass") is None  # models not ready
    _ready(qtbot, c)
    assert c.heat_key(p, "m1", "gradcam", None) is None  # predicted class unknown yet
    assert c.heat_key(p, "m1", "gradcam", "mass") == HeatKey(p.sha256, "m1", "gradcam", "mass")
    c.request_prediction(p)
    qtbot.waitUntil(lambda: c.prediction(key_of(p)) is not None, timeout=WAIT)
    pred = c.prediction(key_of(p))
    key = c.heat_key(p, "m1", "gradcam", None)
    assert key.target == pred.per_model["m1"].predicted and key[1] == "m1"  # a tuple too
    assert c.heat_key(p, ENSEMBLE, "gradcam++", None).target == "baseline"


def test_stale_heatmap_is_cancelled_through_its_worker(qtbot, make):
    c, sessions = make()
    _ready(qtbot, c)
    s = sessions[-1]
    a, b = _patches(2)
    ka = HeatKey(a.sha256, "m1", "gradcam", "mass")
    kb = HeatKey(b.sha256, "m1", "gradcam", "mass")
    s.gate.clear()
    c.request_prediction(a)  # occupies the model thread while the heatmaps queue
    qtbot.waitUntil(lambda: c.busy(), timeout=WAIT)
    c.want_heatmap(a, ka)
    assert c.heat_pending(ka)
    c.want_heatmap(b, kb)  # the user moved on: a's heatmap is cancelled, not computed
    assert not c.heat_pending(ka) and c.heat_pending(kb)
    ready = []
    c.heatmapReady.connect(ready.append)
    s.gate.set()
    qtbot.waitUntil(lambda: ready == [kb], timeout=WAIT)
    _idle(qtbot, c)
    assert [e[0] for e in s.explained] == [key_of(b)]
    heat, rgb = c.heatmap(kb)
    assert heat.shape == (150, 150) and rgb.shape == (150, 150, 3) and rgb.dtype == np.uint8
    # back to a: asked again (a cancelled worker is replaced, not waited for)
    c.want_heatmap(a, ka)
    qtbot.waitUntil(lambda: c.heatmap(ka) is not None, timeout=WAIT)
    c.want_heatmap(b, kb)  # cached: no work
    _idle(qtbot, c)
    assert [e[0] for e in s.explained] == [key_of(b), key_of(a)]
    c.want_heatmap(a, None)  # nothing wanted: nothing queued
    assert not c.busy()


def test_heatmap_error_is_a_signal_with_the_file(qtbot, make):
    c, _ = make(infos=(Info("m1"), Info("broken")))
    _ready(qtbot, c)
    p = _patches(1)[0]
    key = HeatKey(p.sha256, "broken", "gradcam", "mass")
    errors = []
    c.errorOccurred.connect(lambda *a: errors.append(a))
    with qtbot.waitSignal(c.heatmapFailed, timeout=WAIT) as sig:
        c.want_heatmap(p, key)
    assert sig.args[0] == key and "stack.npy" in sig.args[1] and "no gradient" in sig.args[1]
    qtbot.waitUntil(lambda: bool(errors), timeout=WAIT)
    assert errors[0][1] == "Grad-CAM" and "ValueError" in errors[0][2]


def test_heat_cache_is_bounded(qtbot, make):
    c, _ = make()
    _ready(qtbot, c)
    p = _patches(1)[0]
    for i in range(HEAT_CACHE_SIZE + 5):
        c._on_heatmap(HeatKey(str(i), "m1", "gradcam", "mass"), (np.zeros(1), np.zeros(1)))
    assert len(c.heat_cache) == HEAT_CACHE_SIZE
    assert c.heatmap(HeatKey("0", "m1", "gradcam", "mass")) is None
    assert p is not None


def test_export_predicts_the_rest_and_names_the_ensemble_heatmap(qtbot, make, tmp_path):
    c, sessions = make(ensemble=True)
    errors = []
    c.errorOccurred.connect(lambda *a: errors.append(a))
    assert c.export(_patches(1), tmp_path / "r.json", "json") is None  # no models yet
    assert errors[-1][0] == "Export needs loaded models."
    _ready(qtbot, c)
    s = sessions[-1]
    assert c.export([], tmp_path / "r.json", "json") is None
    assert errors[-1][0] == "Nothing to export: no patch selected."
    a, b = _patches(2)
    c.request_prediction(a)
    qtbot.waitUntil(lambda: c.prediction(key_of(a)) is not None, timeout=WAIT)
    key = HeatKey(a.sha256, ENSEMBLE, "gradcam", "baseline")
    c.want_heatmap(a, key)
    qtbot.waitUntil(lambda: c.heatmap(key) is not None, timeout=WAIT)
    out = tmp_path / "r.json"
    with qtbot.waitSignal(c.exportFinished, timeout=WAIT) as sig:
        c.export([a, b], out, "json", shown=(a, key))
    assert sig.args[0] == str(out) and json.loads(out.read_text())["n"] == 2
    _path, fmt, keys, heat = s.exported[0]
    assert keys == [key_of(a), key_of(b)] and fmt == "json"
    assert list(heat) == [(key_of(a), ENSEMBLE)]  # the report names it (test_predictions)
    # the report titles the map with the class it explains and the method
    assert s.exported_meta == {(key_of(a), ENSEMBLE): {"target": "baseline", "method": "gradcam"}}
    assert s.predict_calls[-1] == [key_of(b)]  # only the missing one predicted
    assert c.prediction(key_of(b)) is not None


def test_engine_setting_reaches_the_session_and_drops_older_predictions(qtbot, make):
    from mammo_core.engine import EngineSettings

    c, sessions = make()
    _ready(qtbot, c)
    s = sessions[-1]
    engines = []
    s.set_engine = engines.append
    p = _patches(1)[0]
    with qtbot.waitSignal(c.predictionsReady, timeout=WAIT):
        c.request_prediction(p)
    assert c.prediction(key_of(p)) is not None
    assert not c.service.set_engine(EngineSettings())  # unchanged: nothing dropped
    with qtbot.waitSignal(c.modelsLoaded, timeout=WAIT):  # the views ask again
        assert c.service.set_engine(EngineSettings("keras"))
    assert engines == [EngineSettings("keras")] and c.prediction(key_of(p)) is None
    c.start_models()  # a new session gets the setting too
    assert sessions[-1] is not s and c.service.engine == EngineSettings("keras")


def test_controller_imports_no_tensorflow():
    code = ("import sys, app.controllers.patches, app.controllers.mammogram, app.service, app.main_window; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'tf_keras_vis')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120, cwd=str(REPO),
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen",
                              "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"
