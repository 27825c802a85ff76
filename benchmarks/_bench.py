"""Helpers shared by the benchmark scripts: one-thread subprocesses, summaries, tables, JSON.

Not a benchmark itself. The scripts import it as ``_bench`` (Python puts a script's own folder
first on ``sys.path``, so ``python benchmarks/NAME.py`` finds it without any path juggling).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
BIN = Path(sys.executable).parent

#: Environment of every child process: one thread for torch/OpenMP/BLAS, and the venv on PATH.
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "HPSRL_TORCH_THREADS": "1",
    "PYTHONHASHSEED": "0",
}


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` plus one-thread settings and this interpreter's folder first on PATH."""
    env = {**os.environ, **ONE_THREAD, **extra}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_json_child(args: Sequence[str], *, timeout: float = 1800) -> tuple[dict[str, Any], float]:
    """Run ``python ARGS`` in a fresh process whose last stdout line is JSON.

    Returns that JSON and the process's wall time in seconds (start-up and imports included).
    """
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"child {' '.join(args)} failed with exit code {done.returncode}:\n"
            f"{done.stderr[-4000:]}"
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {' '.join(args)} printed no JSON:\n{done.stdout[-2000:]}")
    return json.loads(lines[-1]), wall


def summary(values: Sequence[float]) -> dict[str, float]:
    """min / median / max / n of a list of numbers (NaN-free)."""
    values = [float(v) for v in values]
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def machine() -> dict[str, Any]:
    """What the numbers were measured on (load average included: this machine is shared)."""
    import torch

    return {
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_at_end": os.getloadavg(),
        "hpsrl_agents_sha256": agents_digest(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def cpu_model() -> str:
    """The CPU's model name, family/model numbers and widest vector extension (Linux)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    flags = set(info.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (
        f"{info.get('model name', 'unknown')} (family {info.get('cpu family', '?')}, "
        f"model {info.get('model', '?')}, {vector})"
    )


def agents_digest() -> dict[str, str]:
    """Short SHA-256 of each agent module: the agents change often, so say which were measured."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted((REPO / "hpsrl" / "agents").glob("*.py"))
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/out/NAME.json`` (with a ``machine`` block) and return its path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (floats with 3 significant digits)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "nan"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Current resident set size of this process, in MiB (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
