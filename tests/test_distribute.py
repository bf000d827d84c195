"""Distributed training: scratch and transfer models (fe and ft stages) train under
``tf.distribute.MirroredStrategy`` over two logical CPU devices. Run in a subprocess because the
logical-device split must happen before TensorFlow initialises its devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from training_data import make_cbis_folder

ROOT = Path(__file__).resolve().parents[1]

MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mammo_core.training import TrainConfig, train
    data, out = sys.argv[1], sys.argv[2]
    runs = {
        "scratch": dict(task="mass_calc", model="scratch_v1", model_options={"hidden": 8}),
        "transfer_fe": dict(task="mass_calc", model="transfer",
                            model_options={"backbone": "vgg16_block4", "mode": "fe", "weights": "none"}),
        "transfer_ft": dict(task="benign_malignant", model="transfer",
                            model_options={"backbone": "vgg16_block4", "mode": "ft", "weights": "none"}),
    }
    report = {}
    for name, kw in runs.items():
        res = train(TrainConfig(data_dir=data, out_dir=f"{out}/{name}", distribute="mirrored", smoke=True,
                                n_boot=10, **kw))
        card = res.bundle.card.to_dict()
        report[name] = {"protocol": card["training"]["protocol"],
                        "stages": sorted({r["stage"] for r in res.history}),
                        "accuracy": res.metrics["accuracy"]}
    print("REPORT " + json.dumps(report))
""")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = "tensorflow"
    return env


@pytest.mark.slow
def test_mirrored_two_logical_devices_scratch_and_transfer(tmp_path):
    pytest.importorskip("tensorflow")
    data = make_cbis_folder(tmp_path / "cbis", n_train_pairs=8, n_test_pairs=4)
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(data), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert report["scratch"]["stages"] == ["train"]
    assert report["transfer_fe"]["stages"] == ["fe"]
    assert report["transfer_ft"]["stages"] == ["fe", "ft"]
    for r in report.values():
        prot = r["protocol"]
        assert prot["distribute"] == "mirrored" and prot["replicas"] == 2 and prot["backend"] == "tensorflow"
        assert prot["global_batch_size"] == 2 * prot["batch_size"]
        assert prot["learning_rate"] == prot["base_learning_rate"]  # no --lr-scaling by default
    for name in report:
        assert (tmp_path / "out" / name / "model.keras").is_file()
