import csv

import numpy as np

from mammo_core.datasets.samples import write_samples
from mammo_core.io import read_patches
from filemakers import write_cbis_folder


def test_samples_cover_every_class_and_round_trip_16_bit(tmp_path, rng):
    data = tmp_path / "set"
    write_cbis_folder(data, rng, n_train_pairs=6, n_test_pairs=12)
    out = tmp_path / "samples"
    files = write_samples(data, out, n=10)
    assert len(files) == 10
    rows = list(csv.DictReader(open(out / "labels.csv")))
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
