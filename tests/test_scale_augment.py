"""The pooled members' scale-only training augmentation (``--train-augment scale``, issue 24 item 3):
the rescale draw of the acquisition augmentation with every other family left as it is, its own
feature-cache key and card record, and the benches' command-line handling of it.
Research use only — not a medical device."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mammo_core import shifts
from mammo_core.errors import MammoError

ROOT = Path(__file__).resolve().parents[1]


def _patches(n=5, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:150, :150]
    base = 0.3 + 0.4 * np.exp(-((yy - 75) ** 2 + (xx - 70) ** 2) / 900.0)
    return np.clip(base[None] + rng.normal(0, 0.03, (n, 150, 150)), 0, 1).astype(np.float32)


def test_scale_kind_is_the_acquisition_rescale_draw_and_nothing_else():
    x = _patches()
    ys, ps = shifts.random_acquisition(x, seed=3, kind="scale")
    _, pa = shifts.random_acquisition(x, seed=3)
    np.testing.assert_array_equal(ps["scale"], pa["scale"])  # the same rescale as the acquisition kind
    assert (ps["blur_sigma"] == 0).all() and np.isinf(ps["snr_db"]).all()
    assert (ps["contrast"] == 1).all() and (ps["gamma"] == 1).all()
    for i in range(len(x)):  # exactly the bench's rescale function, nothing more
        np.testing.assert_allclose(ys[i], np.clip(shifts._rescale_one(x[i], float(ps["scale"][i])), 0, 1), atol=1e-6)
    assert not np.allclose(ys, x)
    y4, _ = shifts.random_acquisition(x[..., None], seed=3, kind="scale")
    np.testing.assert_array_equal(y4[..., 0], ys)
    with pytest.raises(MammoError, match="unknown training augmentation"):
        shifts.random_acquisition(x, seed=3, kind="gamma")


def test_scale_kind_has_its_own_cache_key_and_card_record():
    from mammo_core.training.features import augment_key
    from mammo_core.training.pooled import augment_record, check_augment

    dv = np.array([1, 2, 3])
    assert augment_key("scale", 0, 0, dv).startswith("aug-scale-s0-c0-")
    assert augment_key("scale", 0, 0, dv)[-16:] != augment_key("acquisition", 0, 0, dv)[-16:]
    assert shifts.acquisition_key("scale") != shifts.acquisition_key()
    rec = augment_record("scale", 2, 0)
    assert rec["kind"] == "scale" and rec["views"] == 2 and list(rec["ranges"]) == ["scale"]
    assert rec["ranges"]["scale"][:2] == [0.8, 1.25] and rec["order"] == ["scale"]
    check_augment("scale", 2, 4)
    with pytest.raises(MammoError, match="augment-views"):
        check_augment("scale", 4, 4)  # view 0 is never changed


def test_train_cli_accepts_scale_and_refuses_an_unknown_kind():
    from mammo_core.training.cli import make_parser

    p = make_parser("train", "test", transfer=True)
    a = p.parse_args(["--data", "d", "--out", "o", "--train-augment", "scale", "--augment-views", "2",
                      "--train-views", "4"])
    assert a.train_augment == "scale" and a.augment_views == 2
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "d", "--out", "o", "--train-augment", "gamma"])


@pytest.mark.parametrize("args, message", [
    (["--train-augment", "vgg16b4_baseline_mass_calc=gamma,2,4"], "MEMBER=KIND,VIEWS,TRAIN_VIEWS"),
    (["--train-augment", "vgg16b4_baseline_mass_calc=scale,two,4"], "whole numbers"),
    (["--train-augment", "nobody=scale,2,4"], "MEMBER=KIND,VIEWS,TRAIN_VIEWS"),
])
def test_nested_bench_refuses_a_bad_augment_spec_in_one_line(tmp_path, args, message):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nested_oof.py"), "--data", str(tmp_path),
                        "--weights", str(tmp_path / "w.h5"), "--out", str(tmp_path / "o"), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_nested_bench_names_a_missing_weights_file_in_one_line(tmp_path):
    """Attack: a weights path that does not exist used to end in an UnsafeFile traceback."""
    from training_data import make_cbis_folder

    data = make_cbis_folder(tmp_path / "d", n_train_pairs=4, n_test_pairs=2, patients=True)
    missing = tmp_path / "no_such.weights.h5"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nested_oof.py"), "--data", str(data),
                        "--weights", str(missing), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and str(missing) in r.stderr
