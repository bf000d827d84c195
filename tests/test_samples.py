import csv

import numpy as np
from filemakers import write_cbis_folder

from mammo_core.datasets.samples import write_samples
from mammo_core.io import read_patches


def test_samples_cover_every_class_and_round_trip_16_bit(tmp_path, rng):
    data = tmp_path / "set"
    write_cbis_folder(data, rng, n_train_pairs=6, n_test_pairs=12)
    out = tmp_path / "samples"
    files = write_samples(data, out, n=10)
    assert len(files) == 10
    rows = list(csv.DictReader((out / "labels.csv").read_text().splitlines()))
    assert {r["class_name"] for r in rows} >= {"baseline"}
    test_labels = np.load(data / "public_test_labels.npy")
    present = set(test_labels.tolist())
    assert {int(r["label"]) for r in rows} == present  # every class of the split is represented
    col = read_patches(out)
    assert not col.errors and len(col.patches) == 10
    tensor = np.load(data / "public_test_tensor.npy")
    for r, p in zip(rows, col.patches):
        assert p.pixels.dtype == np.uint16
        np.testing.assert_array_equal(p.pixels, tensor[int(r["source_index"])].reshape(150, 150))
    assert "Suckling" in (out / "NOTICE").read_text()


def test_labels_csv_beside_images_sets_patch_labels(tmp_path, rng):
    data = tmp_path / "set"
    write_cbis_folder(data, rng, n_train_pairs=2, n_test_pairs=4)
    out = tmp_path / "samples"
    write_samples(data, out, n=6)
    rows = {r["file"]: int(r["label"]) for r in csv.DictReader((out / "labels.csv").read_text().splitlines())}
    col = read_patches(sorted(out.glob("*.png")))
    assert [p.label for p in col.patches] == [rows[p.source.split("/")[-1]] for p in col.patches]


def test_bad_labels_csv_is_reported_and_patches_still_load(tmp_path, rng):
    data = tmp_path / "set"
    write_cbis_folder(data, rng, n_train_pairs=2, n_test_pairs=4)
    out = tmp_path / "samples"
    write_samples(data, out, n=4)
    (out / "labels.csv").write_text("file,label\nwhatever.png,9\n")
    col = read_patches(out)
    assert len(col.patches) == 4 and all(p.label is None for p in col.patches)
    assert len(col.errors) == 1 and "labels.csv" in col.errors[0].source and "out of range" in col.errors[0].error
