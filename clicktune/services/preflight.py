"""Checks run before fetching or starting anything, so failures are one clear line, not a trace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from clicktune.services.errors import PrerequisiteError

MIN_JAVA = 17
MIN_FREE_BYTES = 2 * 1024**3
MIN_AVAILABLE_BYTES = 2 * 1024**3
GIB = 1024**3


def parse_java_major(version_output: str) -> int | None:
    """The major version from `java -version` output ('17.0.15' -> 17, '1.8.0_402' -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def java_home() -> Path:
    """The JDK that runs the services: the one of `java` on PATH, which must be >= 17."""
    java = shutil.which("java")
    if java is None:
        raise PrerequisiteError(
            f"java is not on PATH; install a JDK >= {MIN_JAVA} (e.g. apt-get install "
            "openjdk-17-jdk-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise PrerequisiteError(
            f"java at {java} is version {major or 'unknown'}; OpenSearch and Kafka need Java >= "
            f"{MIN_JAVA}: install one and put it first on PATH"
        )
    return Path(os.path.realpath(java)).parent.parent


def maven() -> str:
    """The `mvn` executable; Maven fetches the distributions from Maven Central."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PrerequisiteError(
            "mvn (Apache Maven) is not on PATH; it downloads OpenSearch and Kafka from Maven "
            "Central: install it (e.g. apt-get install maven)"
        )
    return mvn


def check_disk(path: Path, needed: int = MIN_FREE_BYTES) -> None:
    """Refuse to fetch when the file system holding `path` has less than `needed` bytes free."""
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    if free < needed:
        raise PrerequisiteError(
            f"only {free / GIB:.1f} GiB free under {path}; the services need {needed / GIB:.0f} "
            "GiB: free some space or point CLICKTUNE_HOME at a larger disk"
        )


def available_memory(meminfo: str | None = None) -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None when it cannot be read)."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return None
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def check_memory(needed: int = MIN_AVAILABLE_BYTES, available: int | None = None) -> None:
    """Refuse to start when less than `needed` bytes of memory are available."""
    available = available_memory() if available is None else available
    if available is not None and available < needed:
        raise PrerequisiteError(
            f"only {available / GIB:.1f} GiB of memory available; the services need "
            f"{needed / GIB:.0f} GiB: stop other programs or lower services.opensearch_heap"
        )
