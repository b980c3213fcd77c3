"""A replica's local copies of registered versions, each checked against its manifest.

`cache/versions/<version>/` holds the files of one version. A copy is downloaded into a hidden
folder, checked file by file against the manifest (whose own sha256 the registry recorded), and
renamed into place, so a crash never leaves a partial version where a reader looks. A copy found
on disk is checked once per process and downloaded again when it no longer matches.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from serving.errors import ChecksumError
from serving.models.model_manifest import MANIFEST, read_manifest, verify

__all__ = ["ModelCache"]

log = logging.getLogger(__name__)

Download = Callable[[str, Path], str]  # (relative name, target file) -> sha256 written


class ModelCache:
    """Checked local copies of model versions under `root/versions/`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"
        self._checked: set[str] = set()

    def path(self, version: str) -> Path:
        return self.versions / version

    def staging(self) -> Path:
        """A new hidden folder beside the versions, for a copy that is not checked yet."""
        self.versions.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".incoming.", dir=self.versions))

    def place(self, staged: Path, version: str) -> Path:
        """Rename the checked `staged` copy in as `version` (replacing a stale copy)."""
        target = self.path(version)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(staged, target)
        self._checked.add(version)
        return target

    def drop(self, version: str) -> None:
        shutil.rmtree(self.path(version), ignore_errors=True)
        self._checked.discard(version)

    def checked(self, version: str, digest: str, download: Download, what: str) -> Path:
        """The copy of `version` whose manifest has sha256 `digest`: the cached one when it
        still matches, else fetched with `download` and checked before it is placed."""
        target = self.path(version)
        if target.is_dir() and version not in self._checked:
            try:
                verify(target, read_manifest(target / MANIFEST, digest, what), what)
            except ChecksumError as exc:
                log.warning("%s; downloading it again", exc)
                shutil.rmtree(target)
        if not target.is_dir():
            self._download(target, digest, download, what)
        self._checked.add(version)
        return target

    def _download(self, target: Path, digest: str, download: Download, what: str) -> None:
        staged = self.staging()
        try:
            download(MANIFEST, staged / MANIFEST)
            manifest = read_manifest(staged / MANIFEST, digest, what)
            for name, entry in manifest.items():
                (staged / name).parent.mkdir(parents=True, exist_ok=True)
                got = download(name, staged / name)
                if got != entry["sha256"]:
                    raise ChecksumError(
                        f"{what}: downloaded {name} has sha256 {got}, the registry recorded "
                        f"{entry['sha256']}"
                    )
            try:
                os.rename(staged, target)
            except OSError:  # another process placed its copy first: check that one
                verify(target, manifest, what)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
