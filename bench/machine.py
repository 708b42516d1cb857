"""What every benchmark prints first: the machine, the load on it and the versions in use."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe(*packages: str) -> str:
    """A one-paragraph description of the machine and the versions of ``packages``."""
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, load average {load}\n"
        f"python {platform.python_version()} on {platform.system()} {platform.release()}; "
        + "; ".join(versions)
    )
