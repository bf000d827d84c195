"""Training on the JAX backend with TensorFlow's import blocked (every task script's smoke run;
JAX data parallelism over two CPU devices) and TensorFlow's multi-worker strategy with one
worker. Each run is a subprocess (the Keras backend and the device layout are fixed at
start-up). The bundles a JAX run writes load and predict the same under TensorFlow, where
inference and Grad-CAM run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from training_data import make_cbis_folder

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "task_2_1_scratch_mass_calc": [],
    "task_2_2_scratch_benign_malignant": [],
    "task_3_1_pretrained_mass_calc": ["--weights", "none", "--backbone", "vgg16_block4", "--mode", "ft"],
    "task_3_2_pretrained_benign_malignant": ["--weights", "none"],
    "task_4_baseline_mass_calc": [],
}

# Runs scripts in one process on the backend of KERAS_BACKEND, then predicts the held-out
# patches with each bundle it wrote (on the same backend) and saves them next to the bundle.
DRIVER = textwrap.dedent("""
    import importlib.util, json, sys
    class NoTensorFlow:  # as if TensorFlow were not installed (GPU machines may lack it)
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, NoTensorFlow())
    import keras
    import numpy as np
    from mammo_core.bundle import load_model
    from mammo_core.training.data import load_task_data
    data, out, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    for name, extra in runs.items():
        spec = importlib.util.spec_from_file_location(name, f"training_scripts/{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        rc = mod.main(["--data", data, "--out", f"{out}/{name}", "--smoke", "--n-boot", "20", *extra])
        assert rc == 0, (name, rc)
        card = json.load(open(f"{out}/{name}/card.json"))
        x = load_task_data(data, card["task"]).x_test
        p = np.asarray(load_model(f"{out}/{name}").predict(x, verbose=0))
        np.save(f"{out}/{name}/pred_{keras.backend.backend()}.npy", p)
    assert "tensorflow" not in sys.modules
    print("DONE " + keras.backend.backend())
""")


def _env(backend: str, **extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = backend
    env.update(extra)
    return env


def _run(code_args: list[str], env: dict, timeout: int = 1200) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *code_args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def cbis(tmp_path_factory):
    return make_cbis_folder(tmp_path_factory.mktemp("cbis"), n_train_pairs=16, n_test_pairs=8, patients=True)


@pytest.mark.slow
def test_every_script_smoke_on_jax_and_bundle_predicts_the_same_on_tensorflow(cbis, tmp_path):
    pytest.importorskip("jax")
    from mammo_core.bundle import load_model, verify_bundle
    from mammo_core.training.data import load_task_data

    out = tmp_path / "jax"
    proc = _run(["-c", DRIVER, str(cbis), str(out), json.dumps(SCRIPTS)], _env("jax"))
    assert "DONE jax" in proc.stdout
    import keras

    assert keras.backend.backend() == "tensorflow"
    for name in SCRIPTS:
        card = verify_bundle(out / name).card.to_dict()
        assert card["training"]["protocol"]["backend"] == "jax"
        assert card["training"]["protocol"]["preset"]["task"] in ("2.1", "2.2", "3.1", "3.2", "4")
        x = load_task_data(cbis, card["task"]).x_test
        p_tf = load_model(out / name).predict(x, verbose=0)
        p_jax = np.load(out / name / "pred_jax.npy")
        np.testing.assert_allclose(p_tf, p_jax, atol=1e-4, err_msg=name)


DATA_PARALLEL = textwrap.dedent("""
    import json, sys
    class NoTensorFlow:  # as if TensorFlow were not installed (GPU machines may lack it)
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, NoTensorFlow())
    import keras
    from mammo_core.training import TrainConfig, train
    assert len(keras.distribution.list_devices()) == 2
    data, out = sys.argv[1], sys.argv[2]
    report = {}
    for name, kw in {
        "scratch": dict(task="mass_calc", model="scratch_v1", model_options={"hidden": 8}),
        "transfer_ft": dict(task="benign_malignant", model="transfer",
                            model_options={"backbone": "vgg16_block4", "mode": "ft", "weights": "none"}),
    }.items():
        res = train(TrainConfig(data_dir=data, out_dir=f"{out}/{name}", distribute="data-parallel", smoke=True,
                                n_boot=10, lr_scaling="linear", **kw))
        report[name] = {"protocol": res.bundle.card.to_dict()["training"]["protocol"],
                        "stages": sorted({r["stage"] for r in res.history})}
    assert "tensorflow" not in sys.modules
    print("REPORT " + json.dumps(report))
""")


@pytest.mark.slow
def test_jax_data_parallel_two_cpu_devices(cbis, tmp_path):
    pytest.importorskip("jax")
    env = _env("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = _run(["-c", DATA_PARALLEL, str(cbis), str(tmp_path / "dp")], env)
    report = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))[7:])
    assert report["transfer_ft"]["stages"] == ["fe", "ft"]
    for r in report.values():
        prot = r["protocol"]
        assert prot["distribute"] == "data-parallel" and prot["backend"] == "jax" and prot["replicas"] == 2
        assert prot["global_batch_size"] == 2 * prot["batch_size"]
        assert prot["learning_rate"] == pytest.approx(2 * prot["base_learning_rate"])  # --lr-scaling linear


MULTIWORKER = textwrap.dedent("""
    import json, sys
    from mammo_core.training import TrainConfig, train
    data, out = sys.argv[1], sys.argv[2]
    res = train(TrainConfig("mass_calc", "scratch_v1", data, out, distribute="multiworker", smoke=True,
                            n_boot=10, model_options={"hidden": 8}))
    print("REPORT " + json.dumps(res.bundle.card.to_dict()["training"]["protocol"]))
""")


@pytest.mark.slow
def test_multiworker_single_worker_from_tf_config(cbis, tmp_path):
    pytest.importorskip("tensorflow")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    tf_config = json.dumps({"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}})
    proc = _run(["-c", MULTIWORKER, str(cbis), str(tmp_path / "mw")], _env("tensorflow", TF_CONFIG=tf_config))
    prot = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))[7:])
    assert prot["distribute"] == "multiworker" and prot["replicas"] == 1 and prot["backend"] == "tensorflow"
    assert (tmp_path / "mw" / "model.keras").is_file()


def test_wrong_backend_for_distribute_is_a_clear_error(tmp_path):
    """--distribute data-parallel on TensorFlow names the fix in one line."""
    from mammo_core.errors import MammoError
    from mammo_core.training.distribute import make_placement, scaled_lr

    with pytest.raises(MammoError, match="KERAS_BACKEND=jax"):
        make_placement("data-parallel")
    assert scaled_lr(1e-3, "linear", 4) == pytest.approx(4e-3)
    assert scaled_lr(1e-3, "none", 4) == 1e-3


# `mammo predict` and task 5 on the JAX backend with TensorFlow's import blocked: prediction
# runs on JAX (SharedForward under jax.jit, never a tf.function), the engine says so in one line.
PREDICT_JAX = textwrap.dedent("""
    import json, sys
    class NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, NoTensorFlow())
    import importlib.util
    from mammo_core.cli import main
    models, data, samples, report, out = sys.argv[1:6]
    rc = main(["predict", samples, "--models-dir", models, "--no-progress", "-o", report])
    assert rc == 0, rc
    spec = importlib.util.spec_from_file_location("t5", "training_scripts/task_5_ensemble.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    members = sys.argv[6:]
    rc = mod.main(["--members", *members, "--data", data, "--out", out, "--n-boot", "20"])
    assert rc == 0, rc
    assert "tensorflow" not in sys.modules
    print("DONE")
""")


@pytest.mark.slow
def test_mammo_predict_and_task_5_run_on_jax_and_agree_with_tensorflow(cbis, tmp_path):
    pytest.importorskip("jax")
    from bundle_factory import models_dir_with

    from mammo_core.paths import samples_dir

    models = models_dir_with(tmp_path / "models", ["mass_calc", "baseline_mass_calc"], ensemble=True)
    report = tmp_path / "jax.json"
    members = sorted(str(p) for p in models.iterdir() if (p / "model.keras").is_file())
    proc = _run(["-c", PREDICT_JAX, str(models), str(cbis), str(samples_dir()), str(report),
                 str(tmp_path / "models" / "ensemble_jax"), *members], _env("jax"))
    assert "DONE" in proc.stdout
    assert proc.stderr.count("jax backend") == 1  # one line says why OpenVINO is not used
    doc = json.loads(report.read_text())
    assert doc["engine"]["name"] == "keras" and "jax" in doc["engine"]["version"]
    from mammo_core.cli import main

    ref = tmp_path / "tf.json"
    assert main(["predict", str(samples_dir()), "--models-dir", str(models), "--engine", "keras",
                 "--no-progress", "-o", str(ref)]) == 0
    p_jax = {(r["source"], r["model"]): r["probabilities"] for r in doc["predictions"]}
    p_tf = {(r["source"], r["model"]): r["probabilities"] for r in json.loads(ref.read_text())["predictions"]}
    assert p_jax.keys() == p_tf.keys()
    for k, v in p_tf.items():
        np.testing.assert_allclose([p_jax[k][c] for c in v], list(v.values()), atol=1e-4, err_msg=str(k))
    assert (tmp_path / "models" / "ensemble_jax" / "ensemble.json").is_file()
