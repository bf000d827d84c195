"""Typed card and provenance (to and from JSON under the schema's names) and the one scan of a
models folder."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from mammo_core import DISCLAIMER, __version__
from mammo_core.bundle import bundle_dirs, iter_bundles, read_card
from mammo_core.card import CARD_SCHEMA, OLD_CARD_SCHEMAS, Card, card_json, parse_card
from mammo_core.errors import BundleError
from mammo_core.paths import models_dir
from mammo_core.predictions import EnsembleRecord, HeldOut, MemberRecord, ModelRecord, Provenance
from mammo_core.session import Session

BUNDLED = sorted(models_dir().glob("*/card.json"))


@pytest.mark.skipif(not BUNDLED, reason="no bundled models")
@pytest.mark.parametrize("card_file", BUNDLED, ids=lambda p: p.parent.name)
def test_every_bundled_card_loads_through_the_typed_reader(card_file):
    """The shipped cards (/2 since the refit rewrote them with the one writer; a /1 card is
    migrated on read) read back through the writer as the same card."""
    raw = json.loads(card_file.read_text(encoding="utf-8"))
    card = parse_card(raw, card_file)
    assert raw["schema"] in (*OLD_CARD_SCHEMAS, CARD_SCHEMA) and card.schema == CARD_SCHEMA
    assert Card.from_dict(card_json(card)) == card
    assert card.name == raw["name"] and card.classes == tuple(raw["classes"])
    assert card.headline_metric() == ("auc", raw["metrics"]["auc"])
    assert card.metrics.auc_ci95 == tuple(raw["metrics"]["auc_ci95"])
    assert card.metrics.blind is raw["metrics"]["blind"]
    assert read_card(card_file.parent).card == card
    old = raw["schema"] in OLD_CARD_SCHEMAS
    if card.kind == "ensemble":
        q = card.metrics.questions["mass_vs_calcification"]
        if old:  # flat /1 AUCs -> metrics.questions
            assert q.auc == raw["metrics"]["auc_mass_vs_calcification"]
            assert q.ci95 == tuple(raw["metrics"]["auc_mass_vs_calcification_ci95"])
            assert q.n == raw["metrics"]["auc_mass_vs_calcification_n"]
        else:
            assert q.auc == raw["metrics"]["questions"]["mass_vs_calcification"]["auc"]
        assert "auc_mass_vs_calcification" not in card_json(card)["metrics"]
    else:
        assert card.inference.tta == raw["inference"]["tta"]
        assert card.training.split is not None
        assert card.training.split.how == raw["training"]["split"]["validation" if old else "how"]


def _card(**over):
    base = {"schema": CARD_SCHEMA, "name": "m1", "kind": "model", "task": "mass_calc",
            "classes": ["mass", "calcification"], "version": "1.0.0", "files": {"model.keras": "a" * 64},
            "metrics": {"accuracy": 0.7}, "notes": ["kept as read"]}
    base.update(over)
    return base


def test_card_round_trips_and_checks_across_fields(tmp_path):
    card = parse_card(_card())
    assert card.notes == ("kept as read",) and card_json(card) == {**_card(), "inference": {"tta": "none"}}
    assert card.headline_metric() == ("accuracy", 0.7)
    assert parse_card(_card(metrics={"split": "public_test"})).headline_metric() is None
    with pytest.raises(BundleError, match="card.json: card classes"):
        parse_card(_card(classes=["calcification", "mass"]), tmp_path / "card.json")


@pytest.mark.parametrize(("edit", "says"), [
    (lambda c: c.update(gradcam_layers=c.pop("gradcam_layer")), "unknown key 'gradcam_layers'"),
    (lambda c: c.update(task_name=c.pop("task")), "card lacks task"),
    (lambda c: c["metrics"].update(aucc=c["metrics"].pop("auc")), "unknown key 'metrics.aucc'"),
    (lambda c: c["training"].update(protocoll=c["training"].pop("protocol")), "unknown key 'training.protocoll'"),
    (lambda c: c["inference"].update(TTA=c["inference"].pop("tta")), "unknown key 'inference.TTA'"),
    (lambda c: c["metrics"].update(auc_ci95=0.9), "card metrics.auc_ci95 must be"),
    (lambda c: c.update(schema="mammo.card/9"), "card schema 'mammo.card/9'"),
])
def test_a_card_with_a_renamed_key_is_refused_at_load_in_one_line(tmp_path, edit, says):
    """An attack on the card: a key renamed (or mistyped) used to read as "not measured" and
    nothing failed; now the reader refuses it, in one line naming the card file."""
    src = BUNDLED[0].parent if BUNDLED else None
    if src is None:
        pytest.skip("no bundled models")
    raw = json.loads(BUNDLED[-1].read_text(encoding="utf-8"))  # a member's card (inference, training)
    assert raw["kind"] == "model"
    raw["gradcam_layer"] = raw.get("gradcam_layer") or "block4_conv3"
    edit(raw)
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(BundleError) as err:
        read_card(folder)
    msg = str(err.value)
    assert says in msg and msg.startswith(str(folder / "card.json") + ": ") and "\n" not in msg
    assert isinstance(next(iter(iter_bundles(tmp_path)))[1], BundleError)  # the models folder scan says it too


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
                     (ModelRecord("m1", "1.0.0", "a" * 64, "mass_calc", ("mass", "calcification"),
                                  heldout=HeldOut(0.8, (0.6, 0.9), 14, "public_test", "above chance")),),
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


ROOT = Path(__file__).resolve().parents[1]
#: ``.get`` chains on documents that are not cards (each with why it is not card data).
NOT_CARD_DATA = {
    "mammo_core/ensemble/hierarchy.py": "the ensemble spec's fitted factor weights (ensemble.json)",
    "training_scripts/models_table.py": "the ensemble's metrics.json (comparison tables), not its card",
    "mammo_core/engine/cache.py": "the compiled-engine cache's own metadata file, not a card",
}


def _gets(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            yield node


def _names(node: ast.AST) -> set[str]:
    return {n.id.lower() for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr.lower() for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def test_no_get_chain_on_card_data_outside_the_card_module():
    """Readers use the typed card (mammo_core.card); nothing probes card data with ``.get``
    (a mistyped key then reads as "not measured" and nothing fails)."""
    bad = []
    for folder in ("mammo_core", "app", "training_scripts", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "mammo_core/card.py":
                continue
            for call in _gets(ast.parse(path.read_text(encoding="utf-8"))):
                recv = call.func.value
                on_card = any("card" in n for n in _names(recv))
                chain = any(True for _ in _gets(recv))
                if on_card or (chain and rel not in NOT_CARD_DATA):
                    bad.append(f"{rel}:{call.lineno}: {ast.unparse(call)[:80]}")
    assert not bad, "\n".join(bad)
