"""Resident memory of this process from /proc/self/status (Linux), for benchmarks that measure a stage's own peak."""

from __future__ import annotations

import resource
from pathlib import Path


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile) in MiB; NaN where there is none."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Start this process's VmHWM over from its current RSS (clear_refs 5), so that a stage's own peak can be read
    after it; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mb() -> float:
    """VmHWM: the peak since the process started or since :func:`reset_peak`; the process's peak elsewhere."""
    peak = status_mb("VmHWM")
    return peak if peak == peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
