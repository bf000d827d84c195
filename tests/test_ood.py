"""Out-of-distribution checks (mammo_core.ood) and the acquisition shifts (mammo_core.shifts).
Research use only — not a medical device."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mammo_core import ood, shifts
from mammo_core.errors import BundleError


def test_background_share_and_warning_words():
    x = np.full((3, 150, 150, 1), 0.5, np.float32)
    x[1, :, :30] = 0.0  # a film-edge strip: 20 % of the patch
    x[2, :, :] = 0.05  # below the tissue level everywhere
    share = ood.background_share(x)
    assert share[0] == 0.0 and share[1] == pytest.approx(0.2) and share[2] == 1.0
    got = ood.checks(ood.OodSpec(ood.BACKGROUND_LIMIT), share, None)
    assert got[0].warnings == ()
    assert got[1].warnings == ("20 % of this patch is outside the breast; the models were not trained "
                               "on such patches",)
    assert got[1].to_json()["background_share"] == 0.2


def _features(n: int, seed: int, d: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(8, d))
    return rng.normal(size=(n, 8)) @ basis + 0.3 * rng.normal(size=(n, d)) + 5.0


def test_feature_distance_threshold_warns_about_one_percent_and_shifted_features():
    f = _features(1000, 1)
    fold = np.arange(len(f)) % 5
    d_oof = ood.out_of_fold_distances(f, fold, k=8)
    thr = float(np.percentile(d_oof, 99))
    ref = ood.fit_reference(f, k=8)
    fresh = ref.distance(_features(5000, 2))
    assert 0.002 < (fresh > thr).mean() < 0.03  # ~1 % of new in-distribution patches
    shifted = _features(500, 3)
    shifted[:, :10] += 3.0  # another scanner: some features move
    assert (ref.distance(shifted) > thr).mean() > 0.9


def test_reference_round_trip_no_pickle_and_refusals(tmp_path):
    ref = ood.fit_reference(_features(200, 4), k=4)
    p = tmp_path / ood.REFERENCE_FILE
    ref.save(p)
    back = ood.FeatureReference.load(p)
    x = _features(10, 5)
    np.testing.assert_allclose(back.distance(x), ref.distance(x))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BundleError):
        ood.FeatureReference.load(bad)  # an object array is never unpickled
    np.savez(bad, mean=np.zeros(3), scale=np.ones(3), components=np.zeros((2, 4)), sd=np.ones(2),
             residual=np.array(1.0))
    with pytest.raises(BundleError, match="do not fit"):
        ood.FeatureReference.load(bad)


def test_spec_round_trip_and_refusals():
    spec = ood.OodSpec(0.1, "m", reference_file=ood.REFERENCE_FILE, threshold=9.5, how="x")
    assert ood.OodSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(BundleError):
        ood.OodSpec(1.5)
    with pytest.raises(BundleError):
        ood.OodSpec(0.1, "m", reference_file=None, threshold=2.0)
    with pytest.raises(BundleError):
        ood.OodSpec(0.1, "m", reference_file="../x.npz", threshold=2.0)
    with pytest.raises(BundleError):
        ood.OodSpec.from_dict({"background_limit": 0.1})


@pytest.mark.parametrize("name", shifts.SHIFT_NAMES)
def test_every_shift_keeps_shape_and_range_and_is_deterministic(name):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(4, 150, 150, 1)).astype(np.float32)
    y = shifts.apply_shift(name, x, seed=1)
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0
    np.testing.assert_array_equal(y, shifts.apply_shift(name, x, seed=1))
    assert np.array_equal(y, x) is (name == "none") or name.startswith("bits")


def test_shifts_do_what_they_say():
    x = np.tile(np.linspace(0.2, 0.8, 150, dtype=np.float32), (1, 150, 1))
    assert shifts.apply_shift("gamma_2", x)[0, 0, 75] == pytest.approx(x[0, 0, 75] ** 2, rel=1e-5)
    c = shifts.apply_shift("contrast_0.6", x)
    assert c.std() == pytest.approx(0.6 * x.std(), rel=1e-4)
    e = shifts.apply_shift("film_edge", np.repeat(x, 2, axis=0))
    assert ood.background_share(e)[0] == pytest.approx(0.2, abs=0.01)
    n = shifts.apply_shift("noise_snr20", x) - x
    assert n.std() == pytest.approx(x.std() / 10, rel=0.05)
    q = shifts.apply_shift("bits_10", x)
    assert np.allclose(q * 1023, np.round(q * 1023), atol=1e-3)
    with pytest.raises(KeyError):
        shifts.get_shift("nope")


# ------------------------------------------------------------------------------ with a session
@pytest.fixture(scope="module")
def ood_models(tmp_path_factory):
    """Tiny bundles and an ensemble whose OOD spec summarises a member's ``gmp`` features."""
    import dataclasses

    from bundle_factory import copy_bundle, synthetic_patches, tiny_bundle

    from mammo_core.bundle import write_manifest
    from mammo_core.ensemble import MemberInfo, fit_ensemble, write_ensemble
    from mammo_core.inference import load_bundle, predict_arrays

    root = tmp_path_factory.mktemp("models")
    members = [copy_bundle(tiny_bundle(t), root) for t in ("mass_calc", "baseline_mass_calc")]
    models = [load_bundle(d) for d in members]
    imgs, labels = synthetic_patches(200, seed=11)
    x = imgs.astype(np.float32)[..., None] / 65535.0
    spec = fit_ensemble([MemberInfo.from_bundle(m.info) for m in models], predict_arrays(models, x), labels)
    probe = models[1]
    feats = probe.features(x, "gmp")
    fold = np.arange(len(x)) % 5
    thr = float(np.percentile(ood.out_of_fold_distances(feats, fold, k=4), 99))
    ref = ood.fit_reference(feats, k=4)
    spec = dataclasses.replace(spec, ood=ood.OodSpec(ood.BACKGROUND_LIMIT, probe.name, "gmp",
                                                     ood.REFERENCE_FILE, thr, components=4, how="test"))
    write_ensemble(root / "ensemble", spec, reference=ref)
    write_manifest(root)
    return root


def test_every_prediction_carries_its_set_and_ood_check_and_warns_edge_strip_and_shift(ood_models, tmp_path):
    from bundle_factory import synthetic_patches

    from mammo_core.io import Patch
    from mammo_core.report import PredictionRun, to_json
    from mammo_core.session import Session

    s = Session(ood_models)
    assert s.load(["ensemble"]) == []
    imgs, labels = synthetic_patches(6, seed=99)
    plain = [Patch(im, f"p{i}.png", None, int(lab)) for i, (im, lab) in enumerate(zip(imgs, labels))]
    edge = imgs[0].copy()
    edge[:, :40] = 0  # a film-edge strip: 27 % of the patch is background
    shifted = np.clip(imgs[1].astype(np.int64) * 3, 0, 65535).astype(np.uint16)  # another calibration
    patches = [*plain, Patch(edge, "edge.png", None, None), Patch(shifted, "shifted.png", None, None)]
    preds = s.predict(patches)
    for pr in preds:
        assert pr.conformal is not None and pr.level == 0.9 and pr.ood is not None
        assert pr.ood.distance is not None
    assert sum(bool(pr.warnings) for pr in preds[:6]) <= 1  # like the training patches
    assert any("outside the breast" in w for w in preds[6].warnings)
    assert ood.UNLIKE_TEXT in preds[7].warnings
    rows = to_json(PredictionRun(preds, s.provenance()))["predictions"]
    ens_rows = [r for r in rows if r["task"] == "five_class"]
    assert all(r["conformal_level"] == 0.9 and r["conformal_set"] is not None for r in ens_rows)
    assert any(ood.UNLIKE_TEXT in r["warnings"] for r in rows if r["source"] == "shifted.png")


def test_second_start_predicts_from_the_engine_cache_without_tensorflow(ood_models, tmp_path):
    """A start whose compiled graphs are in the engine cache predicts (members, ensemble, set,
    OOD feature distance) without importing TensorFlow, with the first start's answers."""
    import json as _json
    import os
    import subprocess
    import sys
    import textwrap

    from mammo_core import engine as engine_mod

    try:
        engine_mod.openvino_module()
    except Exception as err:  # noqa: BLE001 - any reason it cannot load
        pytest.skip(f"openvino cannot load here: {err}")
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from bundle_factory import synthetic_patches
        from mammo_core.engine import EngineSettings
        from mammo_core.io import Patch
        from mammo_core.session import Session
        s = Session({str(ood_models)!r}, EngineSettings("openvino", "f32"))
        assert s.load() == []
        imgs, _ = synthetic_patches(3, seed=5)
        preds = s.predict([Patch(im, f"p{{i}}.png") for i, im in enumerate(imgs)])
        print(json.dumps({{"tf": "tensorflow" in sys.modules, "engine": s.engine_info().name,
                          "p": [p.ensemble.probabilities for p in preds],
                          "d": [p.ood.to_json() for p in preds]}}))
    """)
    env = dict(os.environ, MAMMO_ENGINE_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                             timeout=600, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(_json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["engine"] == second["engine"] == "openvino"
    assert first["tf"] is True            # converting needs TensorFlow
    assert second["tf"] is False          # the cached graphs do not
    for a, b in zip(first["p"], second["p"]):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], atol=1e-6)
    for a, b in zip(first["d"], second["d"]):
        assert a["feature_distance"] is not None
        assert abs(a["feature_distance"] - b["feature_distance"]) <= 1e-3 and a["warnings"] == b["warnings"]
