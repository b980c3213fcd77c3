"""The local model registry: versioned model directories and named aliases on disk.

Layout under `root` (= `settings.home / "models"`):

    versions/<version>/   model.onnx, tokenizer.json, clicktune.json (see `model_dir`)
    aliases.json          {"production": "v3", "candidate": "v4", ...}
    alias_history.json    {"production": ["v1", "v2", "v3"], ...}  (last HISTORY_KEPT targets)

    registry.lock         taken (flock) by every write, see below

A version appears atomically (copied into a hidden temp dir, then renamed) and is never
overwritten; aliases move by atomic file replacement, so readers never see a half-written state.
Serve replicas, the tuner worker and the CLI write from separate processes, so every
read-modify-write (alias moves, history, archiving, the next version number) holds an exclusive
`flock` on `registry.lock`; without it two writers would each rewrite the file from what they
read and one move would be lost. Readers take no lock. A writer waits at most `lock_timeout_s`.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.errors import RegistryError
from serving.models.model_dir import read_model_meta

__all__ = [
    "HISTORY_KEPT",
    "LocalRegistry",
    "ModelVersion",
    "check_name",
    "next_version",
    "stamp_version",
    "version_of",
]

# Lowercase because versions become part of OpenSearch index names (`docs__<version>__<n>`).
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_AUTO_VERSION = re.compile(r"^v(\d+)$")
HISTORY_KEPT = 10
LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.01


@dataclass(frozen=True)
class ModelVersion:
    """One registered model: its directory and what `clicktune.json` says about it."""

    version: str
    path: Path
    dimension: int
    kind: str
    parent: str | None
    created_at: str
    metrics: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    aliases: tuple[str, ...] = ()
    document_model: str | None = None  # a query model's: the version whose index it searches


class LocalRegistry:
    """Model versions and aliases in a folder; safe against readers during writes."""

    def __init__(self, root: Path, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self._versions = self.root / "versions"
        self._aliases_file = self.root / "aliases.json"
        self._history_file = self.root / "alias_history.json"
        self._lock_file = self.root / "registry.lock"

    @property
    def location(self) -> str:
        """Where the registry lives, for messages."""
        return str(self.root)

    def add(self, src_dir: Path, version: str | None = None) -> ModelVersion:
        """Copy the model directory `src_dir` in as `version` (next `v<N>` when None).

        The copy runs unlocked; the number is taken and the directory renamed in under the
        registry lock, so concurrent adds never get the same number."""
        src_dir = Path(src_dir)
        read_model_meta(src_dir, error=RegistryError)  # refuse a broken dir before copying
        if version is not None:
            check_name(version, "version")
            self._refuse_existing(version)
        self._versions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming.", dir=self._versions))
        try:
            # The whole directory: serving reads MODEL_FILES, the tuner keeps its weights beside.
            shutil.copytree(src_dir, tmp, dirs_exist_ok=True)
            with self._locked():
                placed = self._place(tmp, version)
        except OSError as exc:
            what = version or "a new version"
            raise RegistryError(f"cannot add {src_dir} as {what!r}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed in
        return self.get(placed)

    def _place(self, tmp: Path, version: str | None) -> str:
        """Rename the copied `tmp` in as `version` (or the next number); hold the lock."""
        version = version if version is not None else self._next_version()
        self._refuse_existing(version)
        stamp_version(tmp, version)
        os.rename(tmp, self._versions / version)
        return version

    def _refuse_existing(self, version: str) -> None:
        if (self._versions / version).exists():
            raise RegistryError(f"model version {version!r} already exists in {self.root}")

    def get(self, ref: str) -> ModelVersion:
        """The version named `ref`, or the version the alias `ref` points at."""
        aliases = self.aliases()
        version = aliases.get(ref, ref)
        path = self._versions / version
        if not _check_name_ok(version) or not path.is_dir():
            raise RegistryError(
                f"unknown model {ref!r} in {self.root}: versions {self._version_names()}, "
                f"aliases {sorted(aliases)}"
            )
        return self._load(version, aliases)

    def list(self) -> builtins.list[ModelVersion]:
        """Every registered version, oldest first."""
        aliases = self.aliases()
        versions = [self._load(name, aliases) for name in self._version_names()]
        return sorted(versions, key=lambda v: (v.created_at, v.version))

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at an existing `version` (atomic file replace) and record it in history."""
        check_name(alias, "alias")
        with self._locked():
            self._set_alias(alias, version)

    def _set_alias(self, alias: str, version: str) -> None:
        if alias in self._version_names():
            raise RegistryError(f"alias {alias!r} would shadow the model version of that name")
        if not (self._versions / version).is_dir():
            raise RegistryError(
                f"cannot point alias {alias!r} at unknown version {version!r}: "
                f"versions {self._version_names()}"
            )
        history = self._histories()
        current = self.aliases().get(alias)
        targets = history.setdefault(alias, [current] if current else [])
        if not targets or targets[-1] != version:
            targets.append(version)
            history[alias] = targets[-HISTORY_KEPT:]
        self._write_json(self._history_file, history)
        self._move_alias(alias, version)

    def archive(self, version: str, drop_aliases: tuple[str, ...] = ("candidate",)) -> Path:
        """Move `version` out of the registry into `archived/` (e.g. a canceled task's
        candidate); the aliases in `drop_aliases` that name it are removed, any other alias
        naming it refuses the archive. Its number is never handed out again."""
        with self._locked():
            return self._archive(version, drop_aliases)

    def _archive(self, version: str, drop_aliases: tuple[str, ...]) -> Path:
        aliases = self.aliases()
        kept = sorted(a for a, v in aliases.items() if v == version and a not in drop_aliases)
        if kept:
            raise RegistryError(f"cannot archive {version!r}: alias(es) {kept} still name it")
        if not _check_name_ok(version) or not (self._versions / version).is_dir():
            raise RegistryError(f"cannot archive unknown version {version!r} in {self.root}")
        dropped = {a: v for a, v in aliases.items() if v != version}
        if dropped != aliases:
            self._write_json(self._aliases_file, dropped)
        archived = self.root / "archived"
        archived.mkdir(parents=True, exist_ok=True)
        target = Path(tempfile.mkdtemp(prefix=f"{version}.", dir=archived))
        os.rename(self._versions / version, target / version)
        return target / version

    def alias_history(self, alias: str) -> builtins.list[str]:
        """The versions `alias` pointed at, oldest first; the last one is the current target."""
        return self._histories().get(alias, [])

    def rollback_alias(self, alias: str) -> str:
        """Point `alias` back at the version it named before the current one; return it."""
        with self._locked():
            return self._rollback_alias(alias)

    def _rollback_alias(self, alias: str) -> str:
        targets = self.alias_history(alias)
        if len(targets) < 2:
            raise RegistryError(
                f"alias {alias!r} has no previous version to roll back to (history: {targets})"
            )
        previous = targets[-2]
        if not (self._versions / previous).is_dir():
            raise RegistryError(f"cannot roll {alias!r} back: version {previous!r} is gone")
        history = self._histories()
        history[alias] = targets[:-1]
        self._write_json(self._history_file, history)
        self._move_alias(alias, previous)
        return previous

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive inter-process write lock for one read-modify-write; wait at most
        `lock_timeout_s`, then refuse naming the lock file (not a silent, endless hang)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(self._lock_file, "a")  # noqa: SIM115 - closed below, which unlocks
        except OSError as exc:
            raise RegistryError(f"cannot open the registry lock {self._lock_file}: {exc}") from exc
        with handle:
            deadline = time.monotonic() + self.lock_timeout_s
            while not _try_lock(handle.fileno()):
                if time.monotonic() >= deadline:
                    raise RegistryError(
                        f"registry lock {self._lock_file} still held by another writer after "
                        f"{self.lock_timeout_s:g} s (lock_timeout_s); every registry write "
                        "takes it: try again once the other writer is done"
                    )
                time.sleep(_LOCK_POLL_S)
            yield  # closing the file releases the lock, also when the write failed

    def _move_alias(self, alias: str, version: str) -> None:
        aliases = self.aliases()
        aliases[alias] = version
        self._write_json(self._aliases_file, aliases)

    def _write_json(self, target: Path, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", dir=self.root)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
        os.replace(tmp, target)

    def _histories(self) -> dict[str, builtins.list[str]]:
        try:
            data = json.loads(self._history_file.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self._history_file} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{self._history_file} must hold an object of alias -> versions")
        return {str(k): [str(v) for v in vs] for k, vs in data.items() if isinstance(vs, list)}

    def aliases(self) -> dict[str, str]:
        """Alias name -> version."""
        try:
            data = json.loads(self._aliases_file.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self._aliases_file} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{self._aliases_file} must hold an object of alias -> version")
        return {str(k): str(v) for k, v in data.items()}

    def _version_names(self) -> builtins.list[str]:
        if not self._versions.is_dir():
            return []
        return sorted(p.name for p in self._versions.iterdir() if _check_name_ok(p.name))

    def _next_version(self) -> str:
        archived = self.root / "archived"
        gone = [p.name.split(".")[0] for p in archived.iterdir()] if archived.is_dir() else []
        return next_version([*self._version_names(), *gone])

    def _load(self, version: str, aliases: dict[str, str]) -> ModelVersion:
        path = self._versions / version
        return version_of(version, path, read_model_meta(path, error=RegistryError), aliases)


def version_of(
    version: str, path: Path, meta: dict[str, Any], aliases: dict[str, str]
) -> ModelVersion:
    """The `ModelVersion` of registry `version` at `path` from its `clicktune.json` `meta`."""
    return ModelVersion(
        version=version,
        path=path,
        dimension=int(meta["dimension"]),
        kind=str(meta["kind"]),
        parent=meta.get("parent"),
        created_at=str(meta.get("created_at", "")),
        metrics=dict(meta.get("metrics") or {}),
        aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
        document_model=meta.get("document_model"),
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _check_name_ok(name: str) -> bool:
    return bool(_NAME.match(name))


def next_version(taken: Iterable[str]) -> str:
    """`v<N+1>` for the highest `v<N>` among `taken` (every name ever given, archived too)."""
    numbers = [int(m.group(1)) for n in taken if (m := _AUTO_VERSION.match(n))]
    return f"v{max(numbers, default=0) + 1}"


def check_name(name: str, what: str) -> None:
    """Refuse a version or alias name that cannot be part of an index name (`docs__<v>__<n>`)."""
    if not _check_name_ok(name):
        raise RegistryError(
            f"{what} {name!r} is not allowed: use 1-63 lowercase letters, digits, '.' or '-', "
            "starting with a letter or digit"
        )


def stamp_version(model_dir: Path, version: str) -> None:
    """Write the registry's version into the copied `clicktune.json` so the encoder reports it."""
    meta_path = model_dir / "clicktune.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = version
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
