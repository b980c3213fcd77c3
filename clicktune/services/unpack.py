"""Unzip with the file modes kept (Python's zipfile drops them; bin/ scripts need +x)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from clicktune.services.errors import InstallError


def unzip(archive: Path, target: Path, strip_top: bool = False) -> None:
    """Extract `archive` into `target`; with `strip_top`, drop the single top-level folder."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = info.filename.split("/", 1)[1] if strip_top else info.filename
                if not name:
                    continue
                dest = _safe_path(target, name)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    dest.chmod(mode)
    except (zipfile.BadZipFile, IndexError) as exc:
        raise InstallError(
            f"{archive} is not a usable zip ({exc}); delete it and run `clicktune services up` "
            "again to download it anew"
        ) from exc


def _safe_path(target: Path, name: str) -> Path:
    dest = (target / name).resolve()
    if not dest.is_relative_to(target.resolve()):
        raise InstallError(f"zip entry {name!r} would be written outside {target}")
    return dest
