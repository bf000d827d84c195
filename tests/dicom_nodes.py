"""DICOM nodes for tests, on loopback only: Orthanc (the Debian package; a throw-away config and
storage folder, started on free ports and stopped) where it is installed, else pynetdicom's
storage SCP. Both give back what they stored, so a test can query the results it sent."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                    "/usr/lib/orthanc/libOrthancDicomWeb.so")
AET = "MAMMOTEST"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """A running node: ``port`` / ``aet`` for C-STORE, ``dicomweb`` URL (or None), and
    ``stored()``: every instance it holds, as pydicom datasets."""

    kind = ""
    port = 0
    aet = AET
    dicomweb: str | None = None

    def stored(self) -> list:
        raise NotImplementedError


class OrthancNode(Node):
    kind = "orthanc"

    def __init__(self, folder: Path):
        self.port, self.http = free_port(), free_port()
        plugins = [p for p in DICOMWEB_PLUGINS if os.path.exists(p)][:1]
        config = {
            "Name": "mammo-test", "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"), "DicomAet": AET, "DicomPort": self.port,
            "HttpPort": self.http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "HttpTimeout": 10,
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.dicomweb = f"http://127.0.0.1:{self.http}/dicom-web" if plugins else None
        deadline = time.monotonic() + 60
        while True:
            try:
                self._get("/system")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (folder / "orthanc.log").read_text()[-2000:]
                    raise RuntimeError(f"Orthanc did not start: {tail}") from None
                time.sleep(0.2)

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return r.read()

    def stored(self) -> list:
        import pydicom

        ids = json.loads(self._get("/instances"))
        return [pydicom.dcmread(io.BytesIO(self._get(f"/instances/{i}/file"))) for i in ids]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


class PynetdicomNode(Node):
    kind = "pynetdicom"

    def __init__(self, folder: Path):
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE, evt

        self.folder = folder
        self.port = free_port()
        ae = AE(ae_title=AET)
        ae.require_called_aet = True  # as Orthanc's DicomCheckCalledAet
        for uid in ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.11.1",
                    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.1.2"):
            ae.add_supported_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])

        def on_store(event):
            ds = event.dataset
            ds.file_meta = event.file_meta
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            return 0x0000
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stored(self) -> list:
        import pydicom

        return [pydicom.dcmread(p) for p in sorted(self.folder.glob("*.dcm"))]

    def stop(self) -> None:
        self.server.shutdown()


@contextlib.contextmanager
def dicom_node(folder: Path, kind: str) -> Iterator[Node]:
    folder.mkdir(parents=True, exist_ok=True)
    node = OrthancNode(folder) if kind == "orthanc" else PynetdicomNode(folder)
    try:
        yield node
    finally:
        node.stop()
