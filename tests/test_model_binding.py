"""Attacks on a bundle given by path (issue 26, N14 and N4): a card renaming the task of its model
is refused though nothing else (no manifest) guards it, and a model.keras whose config.json is a
zip bomb under the per-member ratio is refused without being read."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from attack_fixtures import edit_card
from bundle_factory import copy_bundle, tiny_bundle

from mammo_core import bundle
from mammo_core.bundle import BINDING_MEMBER, inspect_keras_archive, verify_bundle, write_manifest
from mammo_core.cli import main
from mammo_core.errors import BundleError
from mammo_core.paths import models_dir


def _renamed_task(b):
    """The attack: the same two outputs, read as benign / malignant instead of mass / calcification."""
    return edit_card(b, task="benign_malignant", classes=["benign", "malignant"])


def test_a_card_renaming_the_task_of_its_model_is_refused_by_verify_and_predict(tmp_path, capsys):
    root = tmp_path / "models"
    root.mkdir()
    b = copy_bundle(tiny_bundle("mass_calc"), root)
    with zipfile.ZipFile(b / "model.keras") as zf:  # the model says what it was trained for
        assert len(zf.namelist()) == 3  # a 4th member would make Keras extract the archive on every load
        assert json.loads(zf.read("metadata.json"))[BINDING_MEMBER]["task"] == "mass_calc"
    _renamed_task(b)
    with pytest.raises(BundleError, match="trained for 'mass_calc'"):
        write_manifest(root)  # the attacker cannot regenerate the manifest either
    with pytest.raises(BundleError, match=r"card was edited after training") as err:
        verify_bundle(b)
    assert str(err.value).startswith(str(b / "card.json") + ": ") and "\n" not in str(err.value)

    rc = main(["models", "verify", "--models-dir", str(root), "--no-spread"])
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err
    png = tmp_path / "p.png"
    from attack_fixtures import good_png

    good_png(png)
    rc = main(["predict", str(png), "--model", str(b), "--no-progress"])
    cap = capsys.readouterr()
    assert rc != 0 and "Traceback" not in cap.err
    lines = [ln for ln in cap.err.splitlines() if "edited after training" in ln]
    assert lines and "'benign_malignant'" in lines[0] and "'mass_calc'" in lines[0], cap.err
    assert "benign" not in cap.out  # no answer under the renamed classes


@pytest.mark.skipif(not (models_dir() / "vgg16_mass_calc" / "card.json").is_file(), reason="no bundled models")
def test_a_shipped_model_copied_with_an_edited_card_is_refused(tmp_path):
    """A shipped model with its card edited is refused: by the bundled manifest's card hash (models
    saved before bindings) or by the binding inside model.keras (models saved since, e.g. the
    retrain of issue 24)."""
    b = tmp_path / "vgg16_mass_calc"
    shutil.copytree(models_dir() / "vgg16_mass_calc", b)
    assert verify_bundle(b).name == "vgg16_mass_calc"  # a plain copy is fine
    _renamed_task(b)
    with pytest.raises(BundleError, match="shipped with another card|card was edited after training"):
        verify_bundle(b)


def _bomb(path, config_bytes: int, weights: bytes = b"w" * 1000):
    """A model.keras whose config.json is whitespace compressed about 1000:1 (deflate's most)."""
    cfg = b'{"class_name": "Functional", "config": {}}' + b" " * config_bytes
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("metadata.json", "{}")
        zf.writestr("config.json", cfg)
        zf.writestr("model.weights.h5", weights, compress_type=zipfile.ZIP_STORED)
    return path


@pytest.fixture()
def unreadable(monkeypatch):
    """Decompressing anything of an archive fails the test: a refusal must come from the declared
    sizes alone."""
    def no(*_a, **_k):
        raise AssertionError("the archive check decompressed a member it should have refused")

    def arm():
        monkeypatch.setattr(zipfile.ZipFile, "open", no)
        monkeypatch.setattr(zipfile.ZipFile, "read", no)
    return arm


def test_a_config_json_bomb_under_the_member_ratio_is_refused_without_reading_it(tmp_path, monkeypatch, unreadable):
    """N4 at small scale: 34 MB compressed 901:1 was 30 GB; here 24 MiB compressed ~1000:1,
    with the same bounds scaled (the config may be 16 MiB, the archive 20x its file)."""
    path = _bomb(tmp_path / "model.keras", 24 << 20)
    monkeypatch.setattr(bundle, "MAX_MEMBER_RATIO", 2000)  # the attack stays under the member ratio
    unreadable()
    with pytest.raises(BundleError, match=r"over 20x its size|config.json declares") as err:
        inspect_keras_archive(path)
    assert str(err.value).startswith(str(path))


def test_the_total_bound_is_on_the_whole_archive_not_each_member(tmp_path, monkeypatch, unreadable):
    path = _bomb(tmp_path / "model.keras", 2 << 20)
    monkeypatch.setattr(bundle, "MAX_MEMBER_RATIO", 2000)
    monkeypatch.setattr(bundle, "RATIO_FREE_BYTES", 1 << 20)
    unreadable()
    with pytest.raises(BundleError, match=r"archive expands to [\d,]+ bytes from [\d,]+ \(over 20x its size"):
        inspect_keras_archive(path)


def test_config_json_is_read_no_further_than_its_bound(tmp_path, monkeypatch):
    """A config.json whose declared size passes (ratios raised) is still read only up to the bound."""
    path = _bomb(tmp_path / "model.keras", 3 << 20)
    monkeypatch.setattr(bundle, "MAX_MEMBER_RATIO", 10_000)
    monkeypatch.setattr(bundle, "MAX_ARCHIVE_RATIO", 10_000)
    monkeypatch.setattr(bundle, "MAX_CONFIG_BYTES", 1 << 20)
    read = []
    real_open = zipfile.ZipFile.open

    def counting_open(self, name, *a, **k):
        fh = real_open(self, name, *a, **k)
        real_read = fh.read

        def read_(n=-1):
            data = real_read(n)
            read.append(len(data))
            return data
        fh.read = read_
        return fh

    monkeypatch.setattr(zipfile.ZipFile, "open", counting_open)
    with pytest.raises(BundleError, match="config.json declares"):
        inspect_keras_archive(path)
    assert sum(read) == 0
    assert inspect_keras_archive(tiny_bundle("mass_calc") / "model.keras").binding is not None
    assert sum(read) <= bundle.MAX_CONFIG_BYTES + bundle.MAX_BINDING_BYTES + 2
