"""`mammo send`: send DICOM results already on disk (``--dicom-out`` of scan / predict) to a
DICOM node (C-STORE, pynetdicom) or a DICOMweb server (STOW-RS, dicomweb-client).

The files are written first and only read here, so a refused association, a timeout or an
unreachable node loses nothing: one line says what failed, the files stay, the exit is non-zero.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_core import DISCLAIMER
from mammo_core.errors import MammoError
from mammo_core.safeio import shown

log = logging.getLogger(__name__)

EPILOG = f"""\
examples:
  mammo scan study/*.dcm -o scans/ --dicom-out results/
  mammo send results/ --to pacs.example.org:104 --aet PACS
  mammo send results/ --dicomweb https://pacs.example.org/dicom-web

Sends every *.dcm file of each DIR (or the files named). Exit codes: 0 all sent, 1 nothing
sent (node refused, unreachable or timed out; the files stay on disk), 2 usage error, 3 some
files were refused or unreadable (the rest were sent).
{DISCLAIMER}.
"""


@dataclass(frozen=True)
class Target:
    """Where to send: a DICOM node (``host``, ``port``, called ``aet``) or a DICOMweb ``url``."""

    host: str = ""
    port: int = 0
    aet: str = ""
    calling_aet: str = "MAMMO"
    url: str = ""
    timeout: float = 10.0

    def describe(self) -> str:
        return self.url if self.url else f"{self.aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class SendResult:
    sent: tuple[str, ...]
    failed: tuple[str, ...]     # "file: why" lines


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "send", help="send DICOM results (SR, presentation states, captures) to a DICOM node or DICOMweb",
        description="Send DICOM files written by --dicom-out to a DICOM node (C-STORE) or a DICOMweb "
                    "server (STOW-RS). " + DISCLAIMER.capitalize() + ".",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="DIR|FILE", help="folders of .dcm files, or files")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="HOST:PORT", help="DICOM node (C-STORE)")
    where.add_argument("--dicomweb", metavar="URL", help="DICOMweb server root (STOW-RS to URL/studies)")
    p.add_argument("--aet", default="ANY-SCP", metavar="AET", help="called AE title of the node (default ANY-SCP)")
    p.add_argument("--calling-aet", default="MAMMO", metavar="AET", help="our AE title (default MAMMO)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the node at each step (default 10)")
    p.set_defaults(func=run)


def _usage(msg: str) -> int:
    print(f"mammo send: error: {msg}", file=sys.stderr)
    return 2


def parse_target(to: str | None, url: str | None, aet: str, calling: str, timeout: float) -> Target:
    """The target from the command's flags; ``MammoError`` (a usage problem) when malformed."""
    if not (timeout > 0):
        raise MammoError(f"--timeout must be > 0 seconds, got {timeout}")
    for name, value in (("--aet", aet), ("--calling-aet", calling)):
        if not value or len(value) > 16 or not value.isascii() or "\\" in value:
            raise MammoError(f"{name}: an AE title is 1-16 ASCII characters, got {value!r}")
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise MammoError(f"--dicomweb: expected an http:// or https:// URL, got {url!r}")
        return Target(url=url.rstrip("/"), calling_aet=calling, timeout=timeout)
    host, sep, port = (to or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MammoError(f"--to: expected HOST:PORT (port 1-65535), got {to!r}")
    return Target(host=host.strip("[]"), port=int(port), aet=aet, calling_aet=calling, timeout=timeout)


def collect(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The .dcm files of the folders (sorted) and the files named; problems as lines."""
    files, problems = [], []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() == ".dcm" and f.is_file()
                           and not f.name.startswith("."))
            if not found:
                problems.append(f"{shown(p)}: no .dcm files in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(f"{shown(p)}: no such file or folder")
    return files, problems


def _read(files: list[Path]) -> tuple[list[tuple[Path, Any]], list[str]]:
    import pydicom

    out: list[tuple[Path, Any]] = []
    problems: list[str] = []
    for f in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(str(f))
            ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID  # noqa: B018 - must exist
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one line, the rest go on
            problems.append(f"{shown(f)}: not a DICOM file that can be sent ({type(exc).__name__})")
            continue
        out.append((f, ds))
    return out, problems


def send_cstore(items, target: Target) -> SendResult:
    """C-STORE every dataset over one association. Raises ``MammoError`` (one line) when the
    association cannot be made."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    ae = AE(ae_title=target.calling_aet)
    for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, attr, target.timeout)
    contexts: dict[str, list[str]] = {}
    for _, ds in items:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts not in syntaxes:
            syntaxes.insert(0, ts)
    if len(contexts) > 128:
        raise MammoError(f"{len(contexts)} SOP classes: more than one association can carry (128)")
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate(target.host, target.port, ae_title=target.aet)
    if not assoc.is_established:
        why = ("association rejected by the node (check --aet and that it knows --calling-aet)"
               if assoc.is_rejected else "no association (connection refused, node unreachable, "
               "timed out or aborted)")
        raise MammoError(f"cannot send to {target.describe()}: {why}")
    sent, failed = [], []
    try:
        for f, ds in items:
            if not assoc.is_established:
                failed.append(f"{shown(f)}: not sent: the association ended")
                continue
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:  # e.g. no accepted context for its class
                failed.append(f"{shown(f)}: not sent: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == 0 or 0xB000 <= code <= 0xBFFF:
                sent.append(str(f))
            else:
                failed.append(f"{shown(f)}: refused by {target.describe()} "
                              + ("(no answer)" if code < 0 else f"(status 0x{code:04X})"))
    finally:
        if assoc.is_established:
            assoc.release()
    return SendResult(tuple(sent), tuple(failed))


def send_stow(items, target: Target) -> SendResult:
    """STOW-RS every dataset in one request. Raises ``MammoError`` (one line) when the server
    cannot be reached or refuses the request."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=target.url, timeout=target.timeout)
    try:
        resp = client.store_instances(datasets=[ds for _, ds in items])
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise MammoError(f"cannot send to {target.describe()}: HTTP {code}") from None
    except requests.exceptions.RequestException as exc:
        raise MammoError(f"cannot send to {target.describe()}: {type(exc).__name__} (unreachable, "
                         "refused or timed out)") from None
    refused = {str(x.ReferencedSOPInstanceUID) for x in resp.get("FailedSOPSequence", [])}
    sent = [str(f) for f, ds in items if str(ds.SOPInstanceUID) not in refused]
    failed = [f"{shown(f)}: refused by {target.describe()}" for f, ds in items
              if str(ds.SOPInstanceUID) in refused]
    return SendResult(tuple(sent), tuple(failed))


def run(args) -> int:
    try:
        target = parse_target(args.to, args.dicomweb, args.aet, args.calling_aet, args.timeout)
    except MammoError as err:
        return _usage(err.problem)
    files, problems = collect(args.paths)
    items, unreadable = _read(files)
    problems += unreadable
    for p in problems:
        log.warning("%s", p)
    if not items:
        raise MammoError("nothing to send" + (f" ({len(problems)} problem(s) above)" if problems else ""))
    try:
        result = send_stow(items, target) if target.url else send_cstore(items, target)
    except MammoError as err:
        raise MammoError(f"{err.problem}; nothing sent, the {len(items)} file(s) stay on disk") from None
    for line in result.failed:
        log.warning("%s", line)
    print(f"mammo: sent {len(result.sent)} of {len(items)} file(s) to {target.describe()}", file=sys.stderr)
    if not result.sent:
        return 1
    return 3 if (result.failed or problems) else 0
