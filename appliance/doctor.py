"""Health checks for an installation: models, runtimes, hardware, data dirs, network.

Every check runs inside a :class:`NetworkGuard`: one generation and one embedding are
made while any connection that would leave the machine is refused and reported, so the
appliance proves it works offline.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.config import Settings
from appliance.netguard import NetworkGuard
from appliance.services import Services

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile")


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class DoctorReport:
    checks: list[CheckResult] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and not self.blocked


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [f for f in CPU_FLAGS if f in present]
    return []


def _check_hardware(svc: Services) -> str:
    import llama_cpp
    import onnxruntime

    flags = cpu_flags()
    gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
    providers = onnxruntime.get_available_providers()
    has_smi = shutil.which("nvidia-smi") is not None
    if svc.settings.device == "cuda" and not (gpu_build or "CUDAExecutionProvider" in providers):
        raise RuntimeError("device=cuda but neither llama.cpp nor onnxruntime has CUDA support")
    return (
        f"{os.cpu_count()} CPUs, flags {' '.join(flags) or 'unknown'}; llama.cpp CUDA "
        f"{'yes' if gpu_build else 'no'}; onnxruntime providers {', '.join(providers)}; "
        f"nvidia-smi {'present' if has_smi else 'absent'}"
    )


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK | os.X_OK)


def _check_dirs(svc: Services) -> str:
    s = svc.settings
    dirs = {"home": s.home, "keys": s.keys_dir, "index": s.index_dir, "audit": s.audit_dir}
    bad = [f"{k} {p}" for k, p in dirs.items() if not _writable(p)]
    if bad:
        raise RuntimeError("not writable: " + ", ".join(bad))
    return f"home {s.home} and its keys/, index/, audit/ are writable; models in {s.models_dir}"


def _check_models(svc: Services) -> str:
    checks = [c for e in svc.catalog.entries() for c in svc.catalog.verify_entry(e)]
    bad = [c.problem for c in checks if not c.ok]
    active = [svc.catalog.active(r).ref for r in ("chat", "embedding")]
    if bad:
        raise RuntimeError("; ".join(bad))
    return f"{len(checks)} files match their sha256; active: {', '.join(active)}"


def _check_generation(svc: Services) -> str:
    from appliance.inference.chat import GenerationParams

    chat = svc.chat()
    started = time.perf_counter()
    out = chat.complete(
        [{"role": "user", "content": "Reply with one word: ready"}], GenerationParams(max_tokens=16)
    )
    if not out.text.strip():
        raise RuntimeError(f"{chat.model_ref} generated no text")
    took = time.perf_counter() - started
    return f"{chat.model_ref}: {out.completion_tokens} tokens in {took:.2f}s"


def _check_embedding(svc: Services) -> str:
    embedder = svc.embedder()
    vectors = embedder.embed(["The appliance checks its embedding model."])
    norm = float(np.linalg.norm(vectors[0]))
    if vectors.shape != (1, embedder.dim) or abs(norm - 1.0) > 1e-3:
        raise RuntimeError(f"bad embedding: shape {vectors.shape}, norm {norm:.4f}")
    return f"{svc.embedder_entry().ref}: dim {embedder.dim}, norm {norm:.4f}"


def _probe(target: str) -> Callable[[Services], str]:
    host, _, port = target.rpartition(":")

    def check(_: Services) -> str:
        # A deliberate outbound attempt: the guard must refuse it before any packet leaves.
        with socket.create_connection((host, int(port)), timeout=2):
            pass
        return f"connected to {target}"

    return check


def run_doctor(settings: Settings, probe_outbound: str | None = None) -> DoctorReport:
    """Run every check under the network guard and collect the results."""
    svc = Services.from_settings(settings)
    allowed = []
    if settings.chat_backend == "remote" and settings.remote_url:
        import httpx

        allowed.append(httpx.URL(settings.remote_url).host)
    checks: list[tuple[str, Callable[[Services], str]]] = [
        ("hardware", _check_hardware),
        ("data dirs", _check_dirs),
        ("models", _check_models),
        ("generation", _check_generation),
        ("embedding", _check_embedding),
    ]
    if probe_outbound:
        checks.append(("outbound probe", _probe(probe_outbound)))
    report = DoctorReport()
    with NetworkGuard(allowed_hosts=allowed) as guard:
        for name, check in checks:
            report.checks.append(_run(name, check, svc))
    report.blocked = [f"{a.event} {a.target}" for a in guard.attempts]
    return report


def _run(name: str, check: Callable[[Services], str], svc: Services) -> CheckResult:
    from appliance.errors import ApplianceError

    started = time.perf_counter()
    try:
        detail = check(svc)
        ok = True
    except (ApplianceError, RuntimeError, OSError, ValueError) as exc:
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        ok = False
    return CheckResult(name, ok, detail, round(time.perf_counter() - started, 3))
