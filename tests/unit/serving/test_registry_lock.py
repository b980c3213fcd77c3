"""Registry writes from concurrent processes (serve replicas, tuner worker, CLI) lose nothing."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from serving.errors import RegistryError
from serving.models.registry import HISTORY_KEPT, LocalRegistry
from tests.unit.serving.test_registry import model_dir

WRITERS = 4
MOVES = 50
VERSIONS = ["v1", "v2", "v3"]


def _targets(writer: int) -> list[str]:
    """The versions writer `writer` points its alias at, in order (never the same twice)."""
    return [VERSIONS[(writer + i) % len(VERSIONS)] for i in range(MOVES)]


def _move_aliases(root: str, writer: int, barrier: Any) -> None:
    registry = LocalRegistry(Path(root))
    barrier.wait()
    for version in _targets(writer):
        registry.set_alias(f"a{writer}", version)


def _add_versions(root: str, src: str, out: str, barrier: Any) -> None:
    registry = LocalRegistry(Path(root))
    barrier.wait()
    found = []
    for _ in range(5):
        try:
            found.append(registry.add(Path(src)).version)
        except RegistryError as exc:
            found.append(f"error: {exc}")
    Path(out).write_text(json.dumps(found))


def _run(target: Any, args: list[tuple]) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(args))
    processes = [context.Process(target=target, args=(*a, barrier)) for a in args]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def test_concurrent_alias_moves_lose_nothing(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    for version in VERSIONS:
        registry.add(model_dir(tmp_path / version), version)
    _run(_move_aliases, [(str(registry.root), w) for w in range(WRITERS)])
    aliases = registry.aliases()
    for writer in range(WRITERS):
        moves = _targets(writer)
        assert aliases.get(f"a{writer}") == moves[-1]
        assert registry.alias_history(f"a{writer}") == moves[-HISTORY_KEPT:]


def test_concurrent_adds_never_share_a_number(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models")
    src = model_dir(tmp_path / "src")
    outs = [tmp_path / f"out{w}.json" for w in range(WRITERS)]
    _run(_add_versions, [(str(registry.root), str(src), str(out)) for out in outs])
    found = [v for out in outs for v in json.loads(out.read_text())]
    assert sorted(found) == sorted(f"v{n}" for n in range(1, 5 * WRITERS + 1))
    assert sorted(v.version for v in registry.list()) == sorted(found)
    assert all(
        json.loads((v.path / "clicktune.json").read_text())["version"] == v.version
        for v in registry.list()
    )


def test_a_held_lock_refuses_after_the_wait_naming_the_lock_file(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "models", lock_timeout_s=0.2)
    registry.add(model_dir(tmp_path / "v1"), "v1")
    with (registry.root / "registry.lock").open("a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)  # another writer holds it
        with pytest.raises(RegistryError, match=r"registry lock .*registry\.lock still held"):
            registry.set_alias("production", "v1")
    assert registry.aliases() == {}
    registry.set_alias("production", "v1")  # released: the write goes through
    assert registry.aliases() == {"production": "v1"}
