"""The Session facade: cards without TensorFlow, loading, prediction with progress/cancel,
explanations, provenance and export (one code path for the viewer and `mammo predict`)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from bundle_factory import (
    copy_bundle,
    models_dir_with,
    synthetic_patches,
    tiny_bundle,
    tiny_ensemble,
)

from mammo_core import DISCLAIMER
from mammo_core.bundle import write_manifest
from mammo_core.errors import MammoError
from mammo_core.io import Patch
from mammo_core.labels import CLASS_NAMES
from mammo_core.session import ModelOutput, PatchPrediction, Session


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"),
                           ["mass_calc", "benign_malignant", "baseline_mass_calc"], ensemble=True)


@pytest.fixture(scope="module")
def session(root):
    s = Session(root)
    assert s.load() == []
    return s


@pytest.fixture(scope="module")
def patches():
    imgs, labels = synthetic_patches(12, seed=21)
    return [Patch(im, f"mem{i}.png", None, int(lab)) for i, (im, lab) in enumerate(zip(imgs, labels))]


def test_available_reads_cards_without_importing_tensorflow(root):
    code = textwrap.dedent(f"""
        import sys
        from mammo_core.session import Session
        infos = Session({str(root)!r}).available()
        print(len(infos), infos[-1].kind)
        bad = [m for m in ("tensorflow", "keras", "tf_keras_vis", "matplotlib") if m in sys.modules]
        assert not bad, bad
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "ensemble"]


def test_load_reports_progress_and_names(root):
    s = Session(root)
    calls = []
    assert s.load(["ensemble"], progress=lambda i, n, name: calls.append((i, n, name))) == []
    assert set(s.loaded) == {"tiny_mass_calc_0", "tiny_benign_malignant_0", "tiny_baseline_mass_calc_0", "ensemble"}
    assert calls[0][:2] == (0, 3) and calls[-1][:2] == (3, 3)


def test_load_failures_are_returned_not_raised(tmp_path):
    root = models_dir_with(tmp_path / "m", ["mass_calc", "benign_malignant"], ensemble=True)
    victim = root / "tiny_mass_calc_0" / "model.keras"
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    s = Session(root)
    fails = s.load()
    text = " ".join(str(f) for f in fails)
    assert "sha256 mismatch" in text and "ensemble not loaded" in text
    assert s.loaded == ["tiny_benign_malignant_0"]
    assert s.load(["nope"])[0].error.startswith(str(root))


def test_predict_contract(session, patches):
    seen = []
    preds = session.predict(patches, batch_size=5, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(5, 12), (10, 12), (12, 12)]
    assert len(preds) == 12
    p = preds[0]
    assert isinstance(p, PatchPrediction) and p.sha256 == patches[0].sha256 and p.source == "mem0.png"
    assert set(p.per_model) == {"tiny_mass_calc_0", "tiny_benign_malignant_0", "tiny_baseline_mass_calc_0"}
    assert isinstance(p.ensemble, ModelOutput) and p.ensemble.task == "five_class"
    assert tuple(p.ensemble.probabilities) == CLASS_NAMES
    for q in preds:
        assert abs(sum(q.ensemble.probabilities.values()) - 1) < 1e-9
        assert q.ensemble.predicted == max(q.ensemble.probabilities, key=q.ensemble.probabilities.get)
        assert q.uncertainty is not None and q.uncertainty >= 0 and isinstance(q.flagged, bool)
    # the synthetic task is learnt: baseline vs abnormal mostly right
    base = [q.ensemble.probabilities["baseline"] > 0.5 for q in preds]
    truth = [pt.label == 0 for pt in patches]
    assert np.mean(np.equal(base, truth)) >= 0.75


def test_predict_cancel_returns_the_patches_done(session, patches):
    ticks = []
    preds = session.predict(patches, batch_size=4, progress=lambda d, t: ticks.append(d),
                            cancel=lambda: len(ticks) >= 2)
    assert len(preds) == 8


def test_one_member_session_equals_the_member(tmp_path, patches):
    root = tmp_path / "m"
    root.mkdir()
    member = copy_bundle(tiny_bundle("five_class"), root)
    tiny_ensemble([member], root / "ensemble")
    write_manifest(root)
    s = Session(root)
    assert s.load(["ensemble"]) == []
    spec = s.ensemble_spec
    from mammo_core.ensemble import apply_temperature

    for q in s.predict(patches):
        raw = np.array([q.per_model["tiny_five_class_0"].probabilities[c] for c in CLASS_NAMES])
        expect = apply_temperature(raw[None], spec.members[0].temperature)[0]
        np.testing.assert_allclose([q.ensemble.probabilities[c] for c in CLASS_NAMES], expect, atol=1e-9)
        assert q.uncertainty is None and q.flagged is False


def test_explain(session, patches):
    m = session.explain(patches[1])
    assert m.shape == (150, 150) and m.dtype == np.float32 and 0 <= m.min() <= m.max() <= 1
    maps = session.explain_all(patches[1], "ensemble", target="baseline")
    # mass_calc and benign_malignant cannot express "baseline": only the 3-class member + mean
    assert set(maps) == {"tiny_baseline_mass_calc_0", "ensemble"}
    np.testing.assert_allclose(maps["ensemble"], maps["tiny_baseline_mass_calc_0"], atol=1e-6)
    one = session.explain(patches[1], "tiny_mass_calc_0", method="gradcam++", target="calcification")
    assert one.shape == (150, 150)
    const = Patch(np.full((150, 150), 1000, np.uint16), "flat.png")
    assert (session.explain(const) == 0).all()
    with pytest.raises(MammoError, match="not loaded"):
        session.explain(patches[0], "nope")


def test_heatmap_reuses_the_probabilities_predict_showed(root, patches, monkeypatch):
    """The ensemble heatmap's default target and weights come from the member probabilities
    predict() computed for the same input on the same engine (no second pass), and give the
    same map as a fresh pass."""
    import mammo_core.session as session_mod

    s = Session(root)
    assert s.load() == []
    fresh = s.explain_all(patches[2])          # nothing kept yet: one pass of its own
    s.predict(patches[:4])
    calls = []
    real = session_mod.predict_arrays
    monkeypatch.setattr(session_mod, "predict_arrays", lambda *a, **k: calls.append(1) or real(*a, **k))
    kept = s.explain_all(patches[2])
    assert calls == []
    assert set(kept) == set(fresh)
    for k in fresh:
        np.testing.assert_allclose(kept[k], fresh[k], atol=1e-5)
    s.explain_all(patches[7])                  # not predicted: computed
    assert calls == [1]
    from mammo_core.engine import EngineSettings

    s.set_engine(EngineSettings("keras"))      # another engine: never the other engine's numbers
    s.explain_all(patches[2])
    assert calls == [1, 1]


def test_provenance(session):
    prov = session.provenance()
    assert prov["disclaimer"] == DISCLAIMER
    names = [m["name"] for m in prov["models"]]
    assert names[-1] == "ensemble" and len(names) == 4
    assert all(len(m["sha256"]) == 64 for m in prov["models"])
    assert prov["ensemble"]["threshold"] is not None


@pytest.mark.parametrize("fmt", ["json", "csv", "pdf"])
def test_export_writes_each_format(session, patches, tmp_path, fmt):
    preds = session.predict(patches[:2])
    hm = {(preds[0].key, "ensemble"): session.explain(patches[0])}
    out = session.export(tmp_path / f"r.{fmt}", fmt, patches[:2], preds, hm)
    data = out.read_bytes()
    assert data.startswith({"json": b"{", "csv": b"#", "pdf": b"%PDF"}[fmt])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"r.{fmt}"]  # no temp files left
