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
    stats = ood.acquisition_stats(x)
    a_thr = float(np.percentile(ood.out_of_fold_acquisition_scores(stats, fold), 99))
    ref = dataclasses.replace(ood.fit_reference(feats, k=4), acquisition=ood.fit_acquisition(stats, a_thr))
    spec = dataclasses.replace(spec, ood=ood.OodSpec(ood.BACKGROUND_LIMIT, probe.name, "gmp",
                                                     ood.REFERENCE_FILE, thr, components=4, how="test",
                                                     acquisition=True, acquisition_rule=ood.ACQ_RULE))
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
    blurred = (shifts.apply_shift("blur_1px", imgs[2].astype(np.float32) / 65535.0) * 65535).astype(np.uint16)
    patches = [*plain, Patch(edge, "edge.png", None, None), Patch(shifted, "shifted.png", None, None),
               Patch(blurred, "blurred.png", None, None)]
    preds = s.predict(patches)
    for pr in preds:
        assert pr.conformal is not None and pr.level == 0.9 and pr.ood is not None
        assert pr.ood.distance is not None
    assert sum(bool(pr.warnings) for pr in preds[:6]) <= 1  # like the training patches
    assert any("outside the breast" in w for w in preds[6].warnings)
    assert ood.UNLIKE_TEXT in preds[7].warnings
    assert any(w.startswith("noise level below that of") for w in preds[8].warnings)  # check (c)
    rows = to_json(PredictionRun(preds, s.provenance()))["predictions"]
    ens_rows = [r for r in rows if r["task"] == "five_class"]
    assert all(r["conformal_level"] == 0.9 and r["conformal_set"] is not None for r in ens_rows)
    assert any(ood.UNLIKE_TEXT in r["warnings"] for r in rows if r["source"] == "shifted.png")
    assert any("another scanner or preparation?" in w for r in rows if r["source"] == "blurred.png"
               for w in r["warnings"])


# ------------------------------------------------------------------------------ acquisition check (c)
def _texture(n: int, seed: int) -> np.ndarray:
    """Mammogram-like patches: smooth structure of varying contrast plus fine grain."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, 150, 150), np.float32)
    for i in range(n):
        s = cv2.GaussianBlur(rng.standard_normal((150, 150)).astype(np.float32), (0, 0), 4.0)
        s /= s.std()
        out[i] = 0.55 + rng.uniform(0.04, 0.1) * s + rng.uniform(0.004, 0.008) * rng.standard_normal((150, 150))
    return np.clip(out, 0, 1)


def test_acquisition_stats_move_the_way_the_shift_says():
    x = _texture(20, 1)
    s0 = ood.acquisition_stats(x)
    names = [n for n, _ in ood.ACQ_STATS]
    assert s0.shape == (20, len(names)) and np.isfinite(s0).all()
    blur = ood.acquisition_stats(shifts.apply_shift("blur_1px", x))
    noisy = ood.acquisition_stats(shifts.apply_shift("noise_snr20", x))
    flat = ood.acquisition_stats(shifts.apply_shift("contrast_0.6", x))
    j = {n: names.index(n) for n in names}
    assert (blur[:, j["noise"]] < s0[:, j["noise"]] - 0.5).all()  # log noise sd
    assert (blur[:, j["sharpness"]] < s0[:, j["sharpness"]]).all()
    assert (blur[:, j["correlation"]] > s0[:, j["correlation"]]).all()
    assert (noisy[:, j["noise"]] > s0[:, j["noise"]]).all()
    np.testing.assert_allclose(flat[:, j["contrast"]], s0[:, j["contrast"]] + np.log(0.6), atol=0.02)
    empty = ood.acquisition_stats(np.zeros((1, 150, 150), np.float32))
    assert np.isnan(empty).all()  # no tissue: no statistics, no acquisition warning


def test_acquisition_limits_warn_about_one_percent_out_of_fold_and_say_what_was_found():
    x = _texture(400, 2)
    s = ood.acquisition_stats(x)
    fold = np.arange(len(s)) % 5
    scores = ood.out_of_fold_acquisition_scores(s, fold)
    thr = float(np.percentile(scores, 99))
    assert (scores > thr).mean() == pytest.approx(0.01, abs=0.006)
    lim = ood.fit_acquisition(s, thr)
    fresh = lim.warned(ood.acquisition_stats(_texture(200, 3)))
    assert fresh.mean() < 0.05  # new in-distribution patches: rarely warned
    blur = ood.acquisition_stats(shifts.apply_shift("blur_1px", x[:50]))
    assert lim.warned(blur).all()
    words = ood.checks(ood.OodSpec(ood.BACKGROUND_LIMIT), np.zeros(1), None, (lim, blur[:1]))[0].warnings
    assert any(w.startswith("noise level below that of ") and w.endswith(
        "% of training patches: another scanner or preparation?") for w in words)
    assert not any("agree" in w or "normal" in w for w in words)  # what was found, never reassurance
    assert ood.checks(None, np.zeros(1), None, (lim, np.full((1, len(ood.ACQ_STATS)), np.nan)))[0].warnings == ()


def test_reference_with_acquisition_round_trips_and_old_references_still_read(tmp_path):
    import dataclasses

    from mammo_core.ensemble.store import read_reference

    s = ood.acquisition_stats(_texture(60, 4))
    ref = dataclasses.replace(ood.fit_reference(_features(200, 4), k=4), acquisition=ood.fit_acquisition(s, 1.5))
    p = tmp_path / ood.REFERENCE_FILE
    ref.save(p)
    back = ood.FeatureReference.load(p)
    np.testing.assert_array_equal(back.acquisition.high, ref.acquisition.high)
    np.testing.assert_array_equal(back.acquisition.warned(s), ref.acquisition.warned(s))
    old = tmp_path / "old.npz"  # a reference written before check (c)
    dataclasses.replace(ref, acquisition=None).save(old)
    assert ood.FeatureReference.load(old).acquisition is None
    spec = ood.OodSpec(0.1, "m", reference_file=ood.REFERENCE_FILE, threshold=9.5, acquisition=True,
                       acquisition_rule=ood.ACQ_RULE)
    d = spec.to_dict()
    assert ood.OodSpec.from_dict(json.loads(json.dumps(d))) == spec
    legacy = {k: v for k, v in d.items() if not k.startswith("acquisition")}  # an older ensemble.json
    assert ood.OodSpec.from_dict(legacy).acquisition is False

    class _Info:
        path = tmp_path

    class _Spec:
        ood = dataclasses.replace(spec, reference_file="old.npz")

    with pytest.raises(BundleError, match="acquisition check the OOD reference does not hold"):
        read_reference(_Info(), _Spec())  # a spec asking for (c) with an old reference: refused
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=ref.mean, scale=ref.scale, components=ref.components, sd=ref.sd,
             residual=np.array(ref.residual), acq_stats=np.array(["noise"]), acq_low=np.zeros(1),
             acq_high=np.zeros(1), acq_inside_low=np.zeros(1), acq_inside_high=np.zeros(1),
             acq_threshold=np.array(1.0))
    with pytest.raises(BundleError, match="other acquisition statistics"):
        ood.FeatureReference.load(bad)


def test_shipped_reference_warns_blurred_and_rescaled_samples_not_the_samples_themselves():
    """The bundled ensemble's acquisition limits on the 20 bundled samples (held-out women):
    the samples as they are vs the same patches blurred (sigma 1 px) and rescaled 1.25x."""
    from mammo_core.ensemble import read_ensemble
    from mammo_core.ensemble.store import read_reference
    from mammo_core.io import read_patches, to_model_input
    from mammo_core.paths import models_dir, samples_dir

    info, spec = read_ensemble(models_dir() / "ensemble")
    ref = read_reference(info, spec)
    if ref is None or ref.acquisition is None:
        pytest.skip("the shipped ensemble predates the acquisition check")
    x = to_model_input(read_patches(sorted(samples_dir().glob("*.png"))).patches)
    assert len(x) == 20
    lim = ref.acquisition
    assert lim.warned(ood.acquisition_stats(x)).sum() <= 1
    assert lim.warned(ood.acquisition_stats(shifts.apply_shift("blur_1px", x))).mean() >= 0.9
    assert lim.warned(ood.acquisition_stats(shifts.apply_shift("scale_1.25", x))).mean() >= 0.9


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
