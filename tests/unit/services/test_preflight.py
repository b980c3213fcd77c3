from __future__ import annotations

from pathlib import Path

import pytest

from clicktune.services import preflight
from clicktune.services.errors import PrerequisiteError


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "25" 2025-09-16', 25),
        ('java version "1.8.0_402"', 8),
        ("something else", None),
    ],
)
def test_java_major_version_is_parsed(output: str, major: int | None) -> None:
    assert preflight.parse_java_major(output) == major


def test_missing_java_and_maven_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PrerequisiteError, match=r"java is not on PATH.*JDK >= 17"):
        preflight.java_home()
    with pytest.raises(PrerequisiteError, match=r"mvn \(Apache Maven\) is not on PATH.*install"):
        preflight.maven()


def test_too_little_disk_names_the_folder_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError) as err:
        preflight.check_disk(tmp_path, needed=1 << 60)
    assert str(tmp_path) in str(err.value)
    assert "CLICKTUNE_HOME" in str(err.value)


def test_too_little_memory_is_refused_with_the_amounts() -> None:
    with pytest.raises(PrerequisiteError, match=r"only 1\.0 GiB of memory available.*2 GiB"):
        preflight.check_memory(available=1024**3)
    preflight.check_memory(available=3 * 1024**3)


def test_available_memory_is_read_from_meminfo() -> None:
    meminfo = "MemTotal: 100 kB\nMemAvailable:    2048 kB\n"
    assert preflight.available_memory(meminfo) == 2048 * 1024
