"""The machine a benchmark run happened on, in words, for the results page (Linux first; other
systems get what the standard library knows)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from benchmarks.common import GIB, proc_bytes

GPU_PROBE = "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` says."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def operating_system() -> str:
    """The distribution's name (/etc/os-release) and the kernel."""
    name = platform.system()
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as release:
            fields = dict(line.rstrip("\n").split("=", 1) for line in release if "=" in line)
        name = fields.get("PRETTY_NAME", name).strip('"')
    return f"{name}, kernel {platform.release()}"


def gpu_name() -> str:
    """The CUDA device's name, or "" when there is none (asked in a fresh process, so the caller
    need not import torch)."""
    out = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def git_commit(root: Path) -> str:
    """The checkout's commit, marked when the working tree differs from it."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(root: Path, gpu: str) -> dict[str, str]:
    """Name -> value rows of the page's machine section (load averages are added by the runner)."""
    memory = f"{proc_bytes('MemTotal', '/proc/meminfo') / GIB:.1f} GiB" if os.path.exists("/proc/meminfo") else "?"
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": memory,
        "OS": operating_system(),
        "Python": sys.version.split()[0],
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "GPU": gpu or "none lent (no CUDA device on this machine)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(root),
    }
