"""Downloads from Maven Central with Maven's dependency plugin (the local ~/.m2 is the cache)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from clicktune.services.errors import FetchError

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>local</groupId><artifactId>{name}</artifactId><version>1</version>
 <packaging>pom</packaging>
 <dependencies>
{dependencies}
 </dependencies></project>
"""
DEPENDENCY = (
    "  <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
    "<version>{version}</version></dependency>"
)


def render_pom(name: str, coordinates: list[str]) -> str:
    """A pom that only lists `group:artifact:version` coordinates as dependencies."""
    deps = []
    for coordinate in coordinates:
        group, artifact, version = coordinate.split(":")
        deps.append(DEPENDENCY.format(group=group, artifact=artifact, version=version))
    return POM.format(name=name, dependencies="\n".join(deps))


def mvn_error_line(output: str) -> str:
    """The line of mvn's output that says what went wrong (its first non-empty [ERROR] line)."""
    plain = ANSI.sub("", output)
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("[ERROR]") and line != "[ERROR]":
            return line
    return lines[-1] if lines else "mvn printed nothing"


class Maven:
    """Runs `mvn -B -q` with the dependency plugin; every failure becomes a `FetchError`."""

    def __init__(self, executable: str = "mvn") -> None:
        self.executable = executable

    def copy(self, artifact: str, output_dir: Path) -> None:
        """Download one artifact (`group:artifact:version[:type]`) into `output_dir`."""
        self._run(
            [
                f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={output_dir}",
            ],
            what=artifact,
            cwd=output_dir.parent,
        )

    def copy_dependencies(self, pom: Path, output_dir: Path, what: str = "") -> None:
        """Download the runtime dependency closure of `pom` into `output_dir`."""
        self._run(
            [
                "-f",
                str(pom),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={output_dir}",
            ],
            what=what or f"the dependencies in {pom}",
            cwd=pom.parent,
        )

    def _run(self, args: list[str], what: str, cwd: Path) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [self.executable, "-B", "-q", *args],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise FetchError(f"could not run {self.executable!r} to fetch {what}: {exc}") from exc
        if done.returncode != 0:
            raise FetchError(
                f"mvn could not fetch {what}: {mvn_error_line(done.stdout + done.stderr)} "
                "(check access to Maven Central, or the mirrors in ~/.m2/settings.xml)"
            )
