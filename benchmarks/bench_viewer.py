"""How fast the viewer feels, measured in one offscreen run.

Prints, from this process's start:
  window_s            the main window is on screen (before TensorFlow / models load)
  models_loaded_s     every bundle verified and loaded (in the background)
  first_probabilities_s  the first patch's probabilities are on screen (a compiled engine whose
                      graph is in its cache needs no TensorFlow for them)
  first_prediction_s  the first patch's probabilities and Grad-CAM heatmap are on screen (the
                      heatmap loads TensorFlow and the Keras models, the gradient reference)
and, after "Run all" has cached every prediction:
  next_patch_ms       median time from "next patch" (Down key) to its results on screen
  next_heatmap_ms     median time until that patch's heatmap is on screen (computed on demand)
whole mammograms (app/views/mammogram_view.py, app/views/mammogram_panel.py, mammo_core/scan.py):
  dicom_display_s     a CBIS-sized 16-bit DICOM (--dicom-size, default 4000 x 6000) from the
                      file to the first painted display in the mammogram view (median of 3)
  mias_map_s          the abnormality map + candidates of one 1024 x 1024 mini-MIAS image
                      (../shared; default mdb005) with the loaded ensemble, default settings,
                      split into map and candidate re-classification
  mias_map_unshared_s the same scan with layer sharing off (each model its own pass: the
                      path before mammo_core/forward.py), measured first in the same run;
  mias_map_speedup    and the ratio, with a check that both give the same candidates
                      (--mias-stride F: another stride than mammo scan's default 0.25)
  mias_scan_<engine>_s the same scan with each engine of --engines (default keras,auto), in
                      this run, with the ratio against the first and whether candidates agree

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_viewer.py [PATH...] [--models-dir DIR]

Without PATH the bundled sample patches are used. Research use only — not a medical device.
"""
from __future__ import annotations

import time

T0 = time.perf_counter()

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", help="patches to open (default: the bundled samples)")
    ap.add_argument("--models-dir", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=10, help="patches to step through (default 10)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--dicom-size", default="4000x6000", metavar="WxH",
                    help="size of the synthetic 16-bit DICOM timed to first display ('0': skip)")
    ap.add_argument("--mias-image", default="mdb005", help="mini-MIAS image to map ('': skip)")
    ap.add_argument("--engines", default="keras,auto", metavar="E,E",
                    help="engines the mini-MIAS scan is timed with, in this order, in one run "
                         "(mammo_core/engine; '': skip); ratios against the first")
    ap.add_argument("--mias-stride", type=float, default=0.25, metavar="F",
                    help="map stride as a fraction of the window side (default 0.25, the default "
                         "of mammo scan)")
    ap.add_argument("--mammograms-only", action="store_true",
                    help="only the whole-mammogram timings (dicom_display_s, mias_map_s)")
    ap.add_argument("--big", type=int, default=5000, metavar="N",
                    help="also time opening an N-patch synthetic stack (0: skip; default 5000)")
    args = ap.parse_args()

    from PyQt6.QtCore import QSettings, Qt
    from PyQt6.QtTest import QTest

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                      tempfile.mkdtemp(prefix="bench-viewer-"))  # not the user's settings
    from app.main import build_window, create_app
    from mammo_core.paths import samples_dir

    app = create_app()
    win = build_window(args.models_dir, interactive_dialogs=False)
    win.resize(1400, 900)
    win.show()
    app.processEvents()
    window_s = time.perf_counter() - T0

    def wait(cond, what):
        deadline = time.monotonic() + args.timeout
        while not cond():
            if time.monotonic() > deadline:
                print(f"bench_viewer: timed out waiting for {what}", file=sys.stderr)
                raise SystemExit(1)
            if win.models_state in ("none", "failed"):
                print(f"bench_viewer: {win.messages[-1] if win.messages else 'no models'}",
                      file=sys.stderr)
                raise SystemExit(1)
            app.processEvents()
            time.sleep(0.001)

    def ready():
        e = win.current_entry()
        return (e is not None and win.browser.patch_model.prediction(e.key) is not None
                and win.shown_heat_key() is not None)

    win.start_models()
    if args.mammograms_only:
        wait(lambda: win.models_ready, "the models")
        print(f"device: CPU ({os.cpu_count()} cores); models: {', '.join(win.service.session.loaded)}")
        _mammogram_timings(app, win, args)
        win.shutdown(60)
        return 0
    paths = args.paths or [str(samples_dir())]
    win.open_paths(paths, remember=False)
    wait(lambda: win.models_ready, "the models")
    models_loaded_s = time.perf_counter() - T0
    def probabilities():
        e = win.current_entry()
        return e is not None and win.browser.patch_model.prediction(e.key) is not None

    wait(probabilities, "the first prediction")
    first_probabilities_s = time.perf_counter() - T0
    tf_at_probabilities = "tensorflow" in sys.modules
    wait(ready, "the first prediction and heatmap")
    first_prediction_s = time.perf_counter() - T0
    n = win.browser.patch_model.rowCount()

    done = []
    win.runAllFinished.connect(done.append)
    t = time.perf_counter()
    win.run_all()
    wait(lambda: bool(done), "run all")
    run_all_s = time.perf_counter() - t

    win.browser.table.setFocus()
    win.browser.table.select_row(0)
    wait(ready, "the first patch again")
    pred_ms, heat_ms = [], []
    shown: list[str] = []
    win.predictionShown.connect(shown.append)  # emitted once the results panel is filled
    for _ in range(min(args.steps, n - 1)):
        t = time.perf_counter()
        QTest.keyClick(win.browser.table, Qt.Key.Key_Down)
        e = win.current_entry()
        wait(lambda e=e: shown and shown[-1] == e.key, "the next prediction")
        pred_ms.append(1000 * (time.perf_counter() - t))
        wait(ready, "the next heatmap")
        heat_ms.append(1000 * (time.perf_counter() - t))

    print(f"device: CPU ({os.cpu_count()} cores); patches: {n}; models: "
          f"{', '.join(win.service.session.loaded)}")
    print(f"window_s={window_s:.2f}")
    print(f"models_loaded_s={models_loaded_s:.2f}")
    print(f"first_probabilities_s={first_probabilities_s:.2f} (engine: "
          f"{win.service.session.engine_info().text()}; TensorFlow imported by then: "
          f"{tf_at_probabilities})")
    print(f"first_prediction_s={first_prediction_s:.2f}")
    print(f"run_all_s={run_all_s:.2f} ({n} patches)")
    if pred_ms:
        print(f"next_patch_ms={statistics.median(pred_ms):.1f} (median of {len(pred_ms)}; "
              f"max {max(pred_ms):.1f})")
        print(f"next_heatmap_ms={statistics.median(heat_ms):.1f} (median of {len(heat_ms)})")
    _mammogram_timings(app, win, args)
    if args.big:
        big_open_s, big_page_ms, thumbs = _big_stack(app, win, args.big)
        print(f"open_{args.big}_s={big_open_s:.2f} (synthetic uint16 stack; rows listed)")
        print(f"page_down_ms={big_page_ms:.1f} (mean of 20; thumbnails made: {thumbs})")
    win.shutdown(60)
    return 0


def _mammogram_timings(app, win, args):
    if args.dicom_size != "0":
        w_, h_ = (int(v) for v in args.dicom_size.lower().split("x"))
        print(f"dicom_display_s={_dicom_display(app, w_, h_):.2f} ({w_} x {h_} 16-bit, median of 3)")
    if args.mias_image:
        print(_mias_map(win.service.session, args.mias_image, args.mias_stride))
        if args.engines:
            print(_mias_map_engines(win.service.session, args.mias_image, args.mias_stride, args.engines))


def _dicom_display(app, width, height):
    """File -> first painted display of a 16-bit DICOM in the mammogram view (median of 3)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from filemakers import write_dicom

    from app.views.mammogram_panel import MammogramPanel
    from mammo_core.mammogram import read_mammogram

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        yy = np.linspace(0, 1, height, dtype=np.float32)[:, None]
        xx = np.linspace(0, 1, width, dtype=np.float32)[None, :]
        px = (40000 * np.exp(-((xx - 0.1) ** 2) / 0.2) * (0.6 + 0.4 * yy)).astype(np.uint16)
        px += rng.integers(0, 2000, size=px.shape, dtype=np.uint16)
        path = write_dicom(Path(tmp) / "Mass-Test_P_00001_LEFT_CC.dcm", px, bits_stored=16)
        panel = MammogramPanel()
        panel.resize(1200, 900)
        panel.show()
        app.processEvents()
        for _ in range(3):
            t = time.perf_counter()
            panel.open_mammogram(read_mammogram(path))
            panel.view.viewport().repaint()
            app.processEvents()
            times.append(time.perf_counter() - t)
        panel.close()
    return statistics.median(times)


def _mias_map(session, name, stride=0.25):
    """The full map + candidates of one mini-MIAS image, default settings but ``stride``, timed
    twice in this run: with identical layers shared between models (mammo_core/forward.py, the
    code path) and with sharing switched off (every model computes its own layers: the path
    before sharing), the unshared one first. Candidates must agree; the ratios are printed."""
    import numpy as np

    from mammo_core import forward
    from mammo_core.io import Patch
    from mammo_core.mammogram import read_mammogram
    from mammo_core.paths import shared_dir
    from mammo_core.scan import ScanSettings, scan_mammogram

    path = shared_dir() / "data" / "mini-mias" / f"{name}.png"
    if not path.is_file():
        return f"mias_map_s=skipped ({path} not found)"
    mammo = read_mammogram(path)
    spent = {"candidates": 0.0}
    predict = session.predict

    def timed_predict(*a, **k):
        t = time.perf_counter()
        try:
            return predict(*a, **k)
        finally:
            spent["candidates"] += time.perf_counter() - t

    def run(share):
        forward.SHARE_LAYERS = share
        warm = np.zeros((150, 150), np.uint16)  # trace both passes before timing
        session.p_abnormal(warm[None], session.abnormal_members()[:1], tta="none")
        session.predict([Patch(warm, "warm-up", None, None, (150, 150))], batch_size=1)
        spent["candidates"] = 0.0
        session.predict = timed_predict
        try:
            t = time.perf_counter()
            res = scan_mammogram(mammo, session, ScanSettings(stride_fraction=stride))
            secs = time.perf_counter() - t
        finally:
            del session.predict
            forward.SHARE_LAYERS = True
        return res, secs, spent["candidates"]

    old, old_s, old_c = run(False)
    res, secs, cand_s = run(True)
    same = [(c.x, c.y) for c in res.candidates] == [(c.x, c.y) for c in old.candidates]
    diff = max((abs(a.p_abnormal - b.p_abnormal) for a, b in zip(res.candidates, old.candidates)),
               default=0.0)
    diff = max(diff, float(np.max(np.abs(res.p_abnormal - old.p_abnormal), initial=0.0)))
    n_rescored = res.settings.top_k * res.settings.rescore
    return "\n".join([
        f"mias_map_s={secs:.2f} ({name}: {len(res.p_abnormal)} windows of {res.window_px} px, "
        f"stride {res.stride_px}; map members {', '.join(res.members)}, TTA {res.settings.map_tta}"
        f"{'' if res.exact else ' (approximate)'}: {secs - cand_s:.2f} s; best {n_rescored} "
        f"after NMS re-classified by every loaded model with its card's TTA: {cand_s:.2f} s; "
        f"{len(res.candidates)} kept; layers shared between models)",
        f"mias_map_unshared_s={old_s:.2f} (the same scan, every model computing its own layers: "
        f"map {old_s - old_c:.2f} s, candidates {old_c:.2f} s; measured first, same process)",
        f"mias_map_speedup={old_s / secs:.2f}x (candidates {old_c / max(cand_s, 1e-9):.2f}x, "
        f"map {(old_s - old_c) / max(secs - cand_s, 1e-9):.2f}x); same candidates: {same}; "
        f"max |P(abnormal) difference| {diff:.1e}",
    ])


def _mias_map_engines(session, name, stride, engines):
    """The same scan (map + candidates) of one mini-MIAS image with each engine of ``engines``
    (``keras,auto``), in this run: seconds, ratio against the first, whether the candidates are
    the same and the largest P(abnormal) difference of the map."""
    import numpy as np

    from mammo_core.engine import EngineSettings
    from mammo_core.io import Patch
    from mammo_core.mammogram import read_mammogram
    from mammo_core.paths import shared_dir
    from mammo_core.scan import ScanSettings, scan_mammogram

    path = shared_dir() / "data" / "mini-mias" / f"{name}.png"
    if not path.is_file():
        return f"mias_map_engines=skipped ({path} not found)"
    mammo = read_mammogram(path)
    before = session.engine.settings
    out, first = [], None
    try:
        for eng in [e.strip() for e in engines.split(",") if e.strip()]:
            session.set_engine(EngineSettings(eng))
            warm = np.zeros((150, 150), np.uint16)  # convert / compile / trace before timing
            session.p_abnormal(warm[None], session.abnormal_members()[:1], tta="none")
            session.predict([Patch(warm, "warm-up", None, None, (150, 150))], batch_size=1)
            t = time.perf_counter()
            res = scan_mammogram(mammo, session, ScanSettings(stride_fraction=stride))
            secs = time.perf_counter() - t
            if first is None:
                first = (eng, secs, res)
            ref = first[2]
            same = [(c.x, c.y) for c in res.candidates] == [(c.x, c.y) for c in ref.candidates]
            diff = float(np.max(np.abs(res.p_abnormal - ref.p_abnormal), initial=0.0))
            out.append(f"mias_scan_{eng}_s={secs:.2f} ({session.engine_info().text()}; "
                       f"{first[1] / secs:.2f}x vs {first[0]}; same candidates: {same}; "
                       f"max |map P(abnormal) difference| {diff:.1e})")
    finally:
        session.set_engine(before)
    return "\n".join(out)


def _big_stack(app, win, n):
    """Open an n-patch synthetic stack: rows appear at once, thumbnails only when painted."""
    import numpy as np
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.npy"
        rng = np.random.default_rng(0)
        np.save(path, rng.integers(0, 65535, (n, 150, 150), dtype=np.uint16))
        win.close_all()
        win.browser.patch_model.thumbnails_made = 0
        t = time.perf_counter()
        win.open_paths([str(path)], remember=False)
        while win.browser.patch_model.rowCount() < n:
            app.processEvents()
        open_s = time.perf_counter() - t
        win.browser.table.setFocus()
        t = time.perf_counter()
        for _ in range(20):
            QTest.keyClick(win.browser.table, Qt.Key.Key_PageDown)
            app.processEvents()
        page_ms = 1000 * (time.perf_counter() - t) / 20
        return open_s, page_ms, win.browser.patch_model.thumbnails_made


if __name__ == "__main__":
    raise SystemExit(main())
