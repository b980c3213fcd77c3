"""The sha256 of every file of a model directory, and the check that a copy matches it.

A registered version's manifest (`MANIFEST`: relative path -> sha256 and size) is uploaded with
its files; the sha256 of the manifest itself is kept by the registry (an MLflow version tag), so
one recorded digest vouches for every file a replica downloads or finds in its cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from serving.errors import ChecksumError

__all__ = ["MANIFEST", "Manifest", "file_sha256", "manifest_of", "read_manifest", "verify"]

MANIFEST = "clicktune-manifest.json"
_CHUNK = 1024 * 1024

Manifest = dict[str, dict[str, Any]]  # relative path -> {"sha256": hex, "bytes": size}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_of(model_dir: Path) -> Manifest:
    """Every file under `model_dir` (the manifest itself excepted), sorted by path."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {
        p.relative_to(model_dir).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
        for p in files
    }


def write_manifest(model_dir: Path) -> str:
    """Write `MANIFEST` into `model_dir`; return its own sha256 (what the registry records)."""
    path = model_dir / MANIFEST
    path.write_text(json.dumps(manifest_of(model_dir), indent=1, sort_keys=True) + "\n")
    return file_sha256(path)


def read_manifest(path: Path, expected_sha256: str, what: str) -> Manifest:
    """The manifest at `path` once its sha256 is `expected_sha256` (else `ChecksumError`)."""
    found = file_sha256(path)
    if found != expected_sha256:
        raise ChecksumError(
            f"{what}: manifest {path} has sha256 {found}, the registry recorded {expected_sha256}"
        )
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ChecksumError(f"{what}: manifest {path} must hold an object of path -> sha256")
    for name in data:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise ChecksumError(f"{what}: manifest {path} names {name!r}, not a relative path")
    return data


def verify(model_dir: Path, manifest: Manifest, what: str) -> None:
    """Raise `ChecksumError` naming the first file of `manifest` missing from `model_dir` or
    with another sha256."""
    for name, entry in manifest.items():
        path = model_dir / name
        if not path.is_file():
            raise ChecksumError(f"{what}: {name} is missing from {model_dir}")
        found = file_sha256(path)
        if found != entry["sha256"]:
            raise ChecksumError(
                f"{what}: {path} has sha256 {found}, the registry recorded {entry['sha256']}"
            )
