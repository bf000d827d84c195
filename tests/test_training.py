"""Training library: class weights, flags, the PyDataset loader and its augmentation, feature caching, k-fold,
grid, and a full train() run whose files, card and metrics are checked against the model."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from training_data import make_cbis_folder

from mammo_core.errors import MammoError
from mammo_core.training import TrainConfig, class_weights, parse_grid, train

pytest.importorskip("tensorflow")


def test_balanced_class_weights_reproduce_study():
    labels = np.array([0] * 1341 + [1] * 933)
    w = class_weights(labels, "balanced", 2)
    assert (round(w[0], 2), round(w[1], 2)) == (0.85, 1.22)
    assert w[0] == pytest.approx(2274 / (2 * 1341))
    assert class_weights(labels, "none", 2) == {0: 1.0, 1: 1.0}
    assert class_weights(labels, "1,1.25", 2) == {0: 1.0, 1: 1.25}
    assert class_weights(np.array([0, 0, 2]), "balanced", 3)[1] == 0.0  # absent class


@pytest.mark.parametrize("spec,match", [("1,2,3", "3 class weights"), ("abc", "balanced"), ("1,-1", "positive")])
def test_bad_class_weights(spec, match):
    with pytest.raises(MammoError, match=match):
        class_weights(np.array([0, 1]), spec, 2)


def test_parse_grid_and_config_checks(tmp_path):
    assert parse_grid(["batch=25,50", "hidden=64,128"]) == (("batch", (25, 50)), ("hidden", (64, 128)))
    with pytest.raises(MammoError):
        parse_grid(["depth=3"])
    with pytest.raises(MammoError, match="folds"):
        TrainConfig("mass_calc", "scratch_v1", tmp_path, tmp_path, folds=1)
    c = TrainConfig("benign_malignant", "transfer", tmp_path, tmp_path / "o")
    assert c.learning_rate == 1e-5 and c.augmentation == "geometric_rot90_reflect"
    assert TrainConfig("mass_calc", "scratch_v1", tmp_path, tmp_path).learning_rate == 1e-3
    assert TrainConfig("mass_calc", "scratch_v1", tmp_path, tmp_path).augmentation == "geometric"


def _x(ds, epoch=None):
    """Every batch's images of ``ds`` (a PatchDataset), at its current epoch."""
    return np.concatenate([ds[i][0] for i in range(len(ds))])


def test_pipeline_augmentations(rng):
    from mammo_core.training.pipeline import make_dataset

    x = rng.random((6, 150, 150, 1)).astype("float32")
    y = np.array([0, 1, 0, 1, 0, 1])
    plain = make_dataset(x, y, batch_size=4, weights={0: 0.5, 1: 2.0})
    assert len(plain) == 2 and len(plain[1][0]) == 2
    np.testing.assert_array_equal(_x(plain), x)
    np.testing.assert_array_equal(np.concatenate([plain[i][2] for i in range(2)]), [0.5, 2, 0.5, 2, 0.5, 2])

    geo = _x(make_dataset(x, y, batch_size=4, augment="geometric"))
    assert geo.shape == x.shape and geo.min() >= 0 and geo.max() <= 1
    assert np.abs(geo - x).mean() > 0.05  # transformed

    rot = _x(make_dataset(x, batch_size=4, augment="rot90", seed=3))
    for a, b in zip(x, rot):
        matches = [k for k in range(4) if np.array_equal(np.rot90(a, k, axes=(0, 1)), b)]
        assert len(matches) == 1  # exactly a right-angle rotation, no flip, no interpolation
    ds = make_dataset(x, y, batch_size=6, augment="rot90", seed=3, shuffle=True)
    epochs = []
    for _ in range(4):
        epochs.append(ds[0])
        ds.on_epoch_end()
    assert any(not np.array_equal(epochs[0][0], e[0]) for e in epochs[1:])  # new draw each epoch
    assert any(not np.array_equal(epochs[0][1], e[1]) for e in epochs[1:])  # new order each epoch
    # trimmed to a multiple of the devices (JAX data parallelism), a different remainder each epoch
    dp = make_dataset(x[:5], y[:5], batch_size=4, shuffle=True, multiple_of=2)
    assert [len(dp[i][0]) for i in range(len(dp))] == [4]


def _fit_weights(x, y, workers, epochs=2):
    import keras

    from mammo_core.models import build_model
    from mammo_core.training.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    model = build_model("scratch_v1", 2, hidden=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    ds = make_dataset(x, y, batch_size=4, shuffle=True, augment="geometric", seed=5, workers=workers)
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False)
    assert ds.epoch >= epochs  # Keras ended every epoch: the seeded stream advanced
    return model.get_weights()


def test_parallel_loader_is_reproducible_at_any_worker_count(rng):
    from mammo_core.training.pipeline import make_dataset

    x = rng.random((10, 150, 150, 1)).astype("float32")
    y = np.arange(10) % 2
    a = make_dataset(x, y, batch_size=4, shuffle=True, augment="geometric", seed=5, workers=1)
    b = make_dataset(x, y, batch_size=4, shuffle=True, augment="geometric", seed=5, workers=3)
    for _ in range(2):
        for i in range(len(a)):
            for u, v in zip(a[i], b[i]):
                np.testing.assert_array_equal(u, v)
        a.on_epoch_end()
        b.on_epoch_end()
    w1, w3 = _fit_weights(x, y, 1), _fit_weights(x, y, 3)
    for u, v in zip(w1, w3):
        np.testing.assert_array_equal(u, v)


def test_feature_cache_copies(rng):
    import keras

    from mammo_core.training.loop import extract_features

    inp = keras.Input((150, 150, 1))
    base = keras.Model(inp, keras.layers.AveragePooling2D(50)(inp))
    x = rng.random((5, 150, 150, 1)).astype("float32")
    f, y = extract_features(base, x, 4, "geometric", 2, 0, np.arange(5))
    assert f.shape == (15, 3, 3, 1) and list(y) == [0, 1, 2, 3, 4] * 3  # originals + 2 variants (3N)
    plain = base.predict(x, verbose=0)
    np.testing.assert_allclose(f[:5], plain, rtol=1e-6)
    assert not np.allclose(f[5:10], f[10:]) and not np.allclose(f[5:10], plain)
    f1, _ = extract_features(base, x, 4, "none", 2, 0, np.arange(5))
    assert f1.shape == (5, 3, 3, 1)
    np.testing.assert_allclose(f1, plain, rtol=1e-6)


@pytest.fixture(scope="module")
def cbis(tmp_path_factory):
    return make_cbis_folder(tmp_path_factory.mktemp("cbis"), n_train_pairs=20, n_test_pairs=8)


def test_train_scratch_writes_bundle_and_honest_metrics(cbis, tmp_path):
    from mammo_core.bundle import load_model, verify_bundle
    from mammo_core.metrics import classification_metrics

    out = tmp_path / "run"
    cfg = TrainConfig("mass_calc", "scratch_v1", cbis, out, name="t21", epochs=3, batch_size=8,
                      model_options={"hidden": 16}, n_boot=200, command="test",
                      allow_collapsed=True)  # 3 epochs may call one class; this test is about the files
    res = train(cfg)
    for f in ("model.keras", "card.json", "metrics.json", "history.csv", "curves.png",
              "confusion_matrix.png", "roc.png"):
        assert (out / f).is_file(), f
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = verify_bundle(out)
    card = info.card.to_dict()
    assert card["task"] == "mass_calc" and card["classes"] == ["mass", "calcification"]
    assert card["gradcam_layer"] == "conv5" and card["training"]["command"] == "test"
    assert card["training"]["split"]["grouped_by"] == "pair"
    assert set(card["training"]["data"]["sha256"]) >= {"train_tensor.npy", "public_test_tensor.npy"}
    assert card["training"]["data"]["counts"]["public_test"] == {"mass": 4, "calcification": 4}
    assert "not a medical device" in card["disclaimer"]
    assert card["metrics"]["blind"] is True and "not_blind_because" not in card["metrics"]
    # the card's numbers are the loaded model's numbers on public_test
    model = load_model(out)
    x = np.load(cbis / "public_test_tensor.npy").astype("float32")[1::2, ..., None] / 65535.0
    labels = np.load(cbis / "public_test_labels.npy")[1::2]
    y = (labels >= 3).astype(int)
    m = classification_metrics(y, model.predict(x, verbose=0), ("mass", "calcification"))
    assert card["metrics"]["accuracy"] == pytest.approx(m["accuracy"])
    assert card["metrics"]["auc"] == pytest.approx(m["auc"], abs=1e-6)
    assert card["metrics"]["confusion_matrix"] == m["confusion_matrix"]
    lo, hi = card["metrics"]["auc_ci95"]
    assert lo is None or lo <= hi
    rows = list(csv.DictReader((out / "history.csv").read_text().splitlines()))
    assert len(rows) == len(res.history) <= 3 and rows[0]["stage"] == "train"
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["public_test"]["n"] == 8
    # the study's AUC (hard labels) beside the probability AUC; for two classes = balanced accuracy
    from sklearn.metrics import balanced_accuracy_score

    pred = model.predict(x, verbose=0).argmax(axis=1)
    assert doc["public_test"]["auc_hard_labels"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert card["metrics"]["auc_hard_labels"] == doc["public_test"]["auc_hard_labels"]
    assert "study" in doc["public_test"]["auc_note"]


def test_validation_split_is_grouped_by_patient(tmp_path):
    from mammo_core.training.data import load_task_data
    from mammo_core.training.runner import validation_split

    folder = make_cbis_folder(tmp_path / "p", n_train_pairs=24, n_test_pairs=4, patients=True)
    data = load_task_data(folder, "baseline_mass_calc")
    assert data.grouping == "patient"
    cfg = TrainConfig("baseline_mass_calc", "scratch_v1", folder, tmp_path / "o")
    tr, va = validation_split(cfg, data.y_train, data.groups_train)
    assert not set(data.groups_train[tr]) & set(data.groups_train[va])
    assert not set(tr // 2) & set(va // 2)  # pairs whole (baselines kept in this task)
    assert 0.05 < len(va) / len(data.y_train) < 0.3


def test_folds_and_grid_tables(cbis, tmp_path):
    out = tmp_path / "cv"
    cfg = TrainConfig("benign_malignant", "scratch_v1", cbis, out, name="cv", epochs=1, batch_size=8,
                      allow_collapsed=True,
                      folds=2, grid=(("hidden", (8, 16)),), augment="none", n_boot=100, smoke=False,
                      held_out_seen="changed after a look")
    res = train(cfg)
    m = res.bundle.card.to_dict()["metrics"]
    assert m["blind"] is False and m["not_blind_because"] == "changed after a look"
    folds = list(csv.DictReader((out / "folds.csv").read_text().splitlines()))
    assert [r["fold"] for r in folds] == ["1", "2", "mean", "std"]
    accs = [float(r["accuracy"]) for r in folds[:2]]
    assert float(folds[2]["accuracy"]) == pytest.approx(np.mean(accs), abs=1e-6)
    grid = list(csv.DictReader((out / "grid.csv").read_text().splitlines()))
    assert [r["hidden"] for r in grid] == ["8", "16"]
    # D5: the study's hard-label AUC beside the probability AUC in both tables
    for table in (folds, grid):
        assert {"auc", "auc_hard_labels"} <= set(table[0])
    assert res.bundle.card.to_dict()["architecture"]["options"]["hidden"] in (8, 16)
    assert res.bundle.card.to_dict()["training"]["protocol"]["augmentation"] == "none"


def test_missing_held_out_split_is_a_clear_error(tmp_path):
    folder = make_cbis_folder(tmp_path / "d", n_train_pairs=4, n_test_pairs=2)
    (folder / "public_test_tensor.npy").unlink()
    (folder / "public_test_labels.npy").unlink()
    with pytest.raises(MammoError, match="public_test"):
        train(TrainConfig("mass_calc", "scratch_v1", folder, tmp_path / "o", smoke=True))


def test_same_seed_same_run(cbis, tmp_path):
    """Augmented training is reproducible from --seed (sequential augmentation map)."""
    runs = []
    for i in range(2):
        cfg = TrainConfig("mass_calc", "scratch_v1", cbis, tmp_path / f"r{i}", epochs=2, batch_size=8,
                          allow_collapsed=True,
                          model_options={"hidden": 8}, n_boot=100)
        runs.append(train(cfg))
    assert runs[0].history == runs[1].history
    assert (tmp_path / "r0" / "history.csv").read_text() == (tmp_path / "r1" / "history.csv").read_text()


def test_mirrored_strategy_and_float32_copy(cbis, tmp_path):
    import keras

    from mammo_core.models import build_model
    from mammo_core.training.runner import _float32_copy

    res = train(TrainConfig("benign_malignant", "scratch_v2", cbis, tmp_path / "m", distribute="mirrored",
                            smoke=True))
    assert res.bundle.card.to_dict()["training"]["protocol"]["distribute"] == "mirrored"
    # a mixed-precision model is saved as its float32 twin with the same weights
    cfg = TrainConfig("mass_calc", "scratch_v1", cbis, tmp_path / "x")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_model("scratch_v1", 2)
        assert mixed.get_layer("conv1").dtype_policy.compute_dtype == "float16"
        assert mixed.get_layer("predictions").dtype_policy.compute_dtype == "float32"
        plain = _float32_copy(cfg, mixed, 2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert plain.get_layer("conv1").dtype_policy.compute_dtype == "float32"
    for a, b in zip(plain.get_weights(), mixed.get_weights()):
        np.testing.assert_array_equal(a, b)
