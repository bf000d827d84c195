"""Typed card and provenance (to and from JSON under the schema's names) and the one scan of a
models folder."""
from __future__ import annotations

import json

import pytest

from mammo_core import DISCLAIMER, __version__
from mammo_core.bundle import Card, bundle_dirs, iter_bundles, read_card
from mammo_core.errors import BundleError
from mammo_core.paths import models_dir
from mammo_core.predictions import EnsembleRecord, MemberRecord, Provenance
from mammo_core.session import Session

BUNDLED = sorted(models_dir().glob("*/card.json"))


@pytest.mark.skipif(not BUNDLED, reason="no bundled models")
@pytest.mark.parametrize("card_file", BUNDLED, ids=lambda p: p.parent.name)
def test_every_bundled_card_round_trips(card_file):
    raw = json.loads(card_file.read_text(encoding="utf-8"))
    card = Card.from_json(raw, card_file)
    assert card.to_json() == raw
    assert card.name == raw["name"] and card.classes == tuple(raw["classes"])
    assert card.headline_metric() == ("auc", raw["metrics"]["auc"])
    assert read_card(card_file.parent).record == card


def _card(**over):
    base = {"name": "m1", "kind": "model", "task": "mass_calc", "classes": ["mass", "calcification"],
            "version": "1.0.0", "files": {"model.keras": "a" * 64}, "metrics": {"accuracy": 0.7},
            "notes": "kept as read"}
    base.update(over)
    return base


def test_card_checks_and_keeps_unknown_keys(tmp_path):
    card = Card.from_json(_card())
    assert card.extra == {"notes": "kept as read"} and card.to_json() == _card()
    assert card.headline_metric() == ("accuracy", 0.7)
    assert Card.from_json(_card(metrics={"split": "public_test"})).headline_metric() is None
    with pytest.raises(BundleError, match="card.json: card classes"):
        Card.from_json(_card(classes=["calcification", "mass"]), tmp_path / "card.json")


def test_iter_bundles_reads_each_folder_once_and_reports_bad_cards(tmp_path):
    assert bundle_dirs(tmp_path / "missing") == [] and list(iter_bundles(tmp_path / "missing")) == []
    good, bad = tmp_path / "a_good", tmp_path / "b_bad"
    for d in (good, bad, tmp_path / "c_not_a_bundle"):
        d.mkdir()
    (good / "card.json").write_text(json.dumps(_card()))
    (bad / "card.json").write_text("{ not json")
    got = list(iter_bundles(tmp_path))
    assert [p.name for p, _ in got] == ["a_good", "b_bad"]
    assert got[0][1].name == "m1"
    assert isinstance(got[1][1], BundleError) and "b_bad" in str(got[1][1])
    assert [i.name for i in Session(tmp_path).available()] == ["m1"]  # bad cards skipped there


def test_provenance_round_trips_under_the_report_names():
    rec = Provenance(__version__, DISCLAIMER, "2026-12-06T05:00:00+00:00",
                     ({"name": "m1", "sha256": "a" * 64},),
                     EnsembleRecord("ens", 0.12, "p90 of validation", "soft voting", "temperature",
                                    {"members": 2}, (MemberRecord("m1", "a" * 64, "mass_calc", 1.5, 1.0),)))
    d = rec.to_json()
    assert set(d) == {"software", "disclaimer", "created", "models", "ensemble", "engine"}
    assert d["software"] == {"name": "mammo-patches", "version": __version__}
    assert d["ensemble"]["members"][0] == {"name": "m1", "sha256": "a" * 64, "task": "mass_calc",
                                           "temperature": 1.5, "weight": 1.0}
    assert Provenance.from_json(json.loads(json.dumps(d))) == rec
    nothing_loaded = Session(models_dir()).provenance()
    assert nothing_loaded["models"] == [] and nothing_loaded["ensemble"] is None
    assert Provenance.from_json(nothing_loaded).to_json() == nothing_loaded
