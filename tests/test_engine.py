"""The engine seam (mammo_core/engine): OpenVINO gives Keras' answers (f32 within 1e-4), every
fault on its path is one log line and the Keras path, the converted graph is cached on disk and
a stale / corrupted / unwritable cache never changes an answer, and every output names the engine."""
from __future__ import annotations

import json
import logging
import types

import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches, tiny_bundle

from mammo_core import engine as engine_mod
from mammo_core.engine import Engine, EngineSettings
from mammo_core.engine.cache import IRCache
from mammo_core.inference import load_bundle, predict_arrays
from mammo_core.io import scale_to_unit
from mammo_core.paths import models_dir, samples_dir


def _openvino_or_skip():
    try:
        return engine_mod.openvino_module()
    except Exception as err:  # noqa: BLE001 - any reason it cannot load
        pytest.skip(f"openvino cannot load here: {err}")


@pytest.fixture(scope="module")
def members():
    return [load_bundle(tiny_bundle(t)) for t in ("mass_calc", "baseline_mass_calc")]


@pytest.fixture(scope="module")
def x():
    imgs, _ = synthetic_patches(12, seed=3)
    return scale_to_unit(imgs)[..., None].astype(np.float32)


def _engine(tmp_path, engine="openvino", precision="f32"):
    return Engine(EngineSettings(engine, precision), IRCache(tmp_path / "cache"))


def _close(a, b, tol=1e-4):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=tol, rtol=0)


@pytest.mark.parametrize("tta", ["none", "dihedral8"])
def test_openvino_f32_gives_keras_answers_with_the_same_tta(members, x, tmp_path, tta):
    _openvino_or_skip()
    eng = _engine(tmp_path)
    assert eng.info().name == "openvino" and eng.info().precision == "f32"
    ref = predict_arrays(members, x, batch_size=5, tta=tta)
    got = predict_arrays(members, x, batch_size=5, tta=tta, engine=eng)
    _close(got, ref)
    assert eng.info().name == "openvino"  # no silent fallback happened


def test_bundled_members_f32_within_1e4_of_keras_on_the_samples(tmp_path):
    _openvino_or_skip()
    md = models_dir()
    if not (md / "MANIFEST.json").is_file():
        pytest.skip("no bundled models")
    from mammo_core.io import read_patches, to_model_input

    ms = [load_bundle(md / n, md) for n in ("vgg16b4_baseline_mass_calc", "vgg16_mass_calc",
                                             "vgg16_benign_malignant")]
    xs = to_model_input(read_patches([samples_dir()]).patches)
    ref = predict_arrays(ms, xs, batch_size=len(xs), tta="none")
    got = predict_arrays(ms, xs, batch_size=len(xs), tta="none", engine=_engine(tmp_path))
    _close(got, ref, 1e-4)


def test_openvino_missing_is_one_line_and_keras(members, x, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MAMMO_OPENVINO", "0")
    eng = _engine(tmp_path, "auto")
    with caplog.at_level(logging.WARNING, logger="mammo_core.engine"):
        got = predict_arrays(members, x, batch_size=6, tta="none", engine=eng)
        predict_arrays(members, x, batch_size=6, tta="none", engine=eng)
    _close(got, predict_arrays(members, x, batch_size=6, tta="none"), 0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "OpenVINO unavailable" in lines[0] and "Keras" in lines[0]
    info = eng.info()
    assert info.name == "keras" and info.precision == "f32" and "unavailable" in info.note


def _fake_ov(real, convert=None, compile_=None, infer=None):
    """``openvino`` with one of its steps replaced (a fault injected)."""

    class Core:
        def __init__(self):
            self._c = real.Core()

        def read_model(self, *a):
            return self._c.read_model(*a)

        def compile_model(self, *a, **k):
            if compile_ is not None:
                compile_()
            cm = self._c.compile_model(*a, **k)
            if infer is None:
                return cm

            class Broken:
                outputs = cm.outputs

                def __call__(self, _x):
                    infer()

            return Broken()

    def convert_model(*a, **k):
        if convert is not None:
            convert()
        return real.convert_model(*a, **k)

    return types.SimpleNamespace(Core=Core, convert_model=convert_model, save_model=real.save_model,
                                 get_version=real.get_version)


def _boom(msg):
    def f():
        raise RuntimeError(msg + "\nsecond line of a long C++ message")
    return f


@pytest.mark.parametrize("fault,words", [
    ("convert", "cannot convert"),
    ("compile", "cannot compile"),
    ("infer", "inference failed"),
])
def test_each_openvino_fault_is_one_line_and_the_keras_answers(members, x, tmp_path, monkeypatch, caplog,
                                                               fault, words):
    real = _openvino_or_skip()
    monkeypatch.setattr(engine_mod, "openvino_module",
                        lambda: _fake_ov(real, **{fault if fault != "compile" else "compile_": _boom(fault)}))
    eng = _engine(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mammo_core.engine"):
        got = predict_arrays(members, x, batch_size=6, tta="dihedral8", engine=eng)
    _close(got, predict_arrays(members, x, batch_size=6, tta="dihedral8"), 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "mammo_core.engine"]
    assert len(lines) == 1 and words in lines[0] and "\n" not in lines[0]
    assert eng.info().name == "keras" and words in eng.info().note


def test_converted_graph_is_cached_and_reused_without_converting(members, x, tmp_path, monkeypatch):
    real = _openvino_or_skip()
    first = _engine(tmp_path)
    ref = predict_arrays(members, x, batch_size=6, tta="none", engine=first)
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert entries and all((e / "entry.json").is_file() for e in entries)
    # a second start: conversion would fail, so an answer proves the cache was used
    monkeypatch.setattr(engine_mod, "openvino_module", lambda: _fake_ov(real, convert=_boom("convert")))
    second = _engine(tmp_path)
    _close(predict_arrays(members, x, batch_size=6, tta="none", engine=second), ref, 0)
    assert second.info().name == "openvino"


@pytest.mark.parametrize("damage", ["truncate_bin", "other_version", "garbage_xml", "not_json"])
def test_stale_or_corrupted_cache_entry_is_rebuilt_never_used(members, x, tmp_path, caplog, damage):
    _openvino_or_skip()
    ref = predict_arrays(members, x, batch_size=6, tta="none")
    predict_arrays(members, x, batch_size=6, tta="none", engine=_engine(tmp_path))
    for entry in (tmp_path / "cache").iterdir():
        if damage == "truncate_bin":
            b = (entry / "model.bin").read_bytes()
            (entry / "model.bin").write_bytes(b[: len(b) // 2])
        elif damage == "other_version":
            meta = json.loads((entry / "entry.json").read_text())
            meta["version"] = "2020.1.0"
            (entry / "entry.json").write_text(json.dumps(meta))
        elif damage == "garbage_xml":
            (entry / "model.xml").write_text("<net>not a model")
        else:
            (entry / "entry.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="mammo_core.engine"):
        eng = _engine(tmp_path)
        got = predict_arrays(members, x, batch_size=6, tta="none", engine=eng)
    _close(got, ref)
    assert eng.info().name == "openvino"
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    # rebuilt: a third start finds a good entry again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mammo_core.engine"):
        predict_arrays(members, x, batch_size=6, tta="none", engine=_engine(tmp_path))
    assert not caplog.records


def test_unwritable_cache_folder_keeps_the_graph_in_memory_with_one_line(members, x, tmp_path, caplog):
    _openvino_or_skip()
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder's parent should be")
    eng = Engine(EngineSettings("openvino", "f32"), IRCache(blocker / "cache"))
    with caplog.at_level(logging.WARNING, logger="mammo_core.engine"):
        got = predict_arrays(members, x, batch_size=6, tta="dihedral8", engine=eng)
    _close(got, predict_arrays(members, x, batch_size=6, tta="dihedral8"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "cannot be written" in lines[0] and "memory" in lines[0]
    assert eng.info().name == "openvino"


def test_settings_refuse_unknown_engine_and_precision():
    from mammo_core.errors import MammoError

    with pytest.raises(MammoError, match="unknown engine"):
        EngineSettings("onnx")
    with pytest.raises(MammoError, match="unknown precision"):
        EngineSettings("auto", "int8")


def test_keras_engine_reports_f32_and_reference(tmp_path):
    info = _engine(tmp_path, "keras", "bf16").info()
    assert (info.name, info.precision) == ("keras", "f32") and info.deviation.startswith("reference")


def test_every_report_names_the_engine_and_precision(tmp_path):
    from mammo_core.report import PredictionRun, csv_text, json_text
    from mammo_core.session import Session

    root = models_dir_with(tmp_path, ["mass_calc", "baseline_mass_calc"], ensemble=True)
    s = Session(root, EngineSettings("keras"))
    assert not s.load()
    coll = s.read([samples_dir()])
    preds = s.predict(coll.patches[:2])
    prov = s.provenance()
    assert prov["engine"]["name"] == "keras" and prov["engine"]["precision"] == "f32"
    run = PredictionRun(preds, prov, [], coll.patches[:2])
    assert json.loads(json_text(run))["engine"]["name"] == "keras"
    assert "engine keras" in csv_text(run).splitlines()[0]
    pdf = s.export(tmp_path / "r.pdf", "pdf", coll.patches[:2], preds)
    assert pdf.stat().st_size > 0
    from mammo_core.predictions import Provenance

    assert Provenance.from_json(prov).engine == prov["engine"]


def test_cli_predict_engine_flag_reaches_the_report(tmp_path, capsys):
    from mammo_core.cli import main

    root = models_dir_with(tmp_path, ["mass_calc"], ensemble=False)
    rc = main(["predict", str(samples_dir()), "--models-dir", str(root), "--model", "all",
               "--engine", "keras", "--no-progress"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["engine"]["name"] == "keras" and doc["engine"]["requested"] == "keras"
