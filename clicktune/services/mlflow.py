"""The local MLflow tracking server: the `mlflow` PyPI package of this environment, on loopback.

Its backend store is a SQLite file and its artifact proxy (`--artifacts-destination`) a folder,
both under `$CLICKTUNE_HOME/services/mlflow/`. A production server differs by configuration only
(`registry.mlflow_url`; an `s3://`, `gs://` or `wasbs://` artifacts destination is the server's
own flag). Nothing is downloaded: the package comes with `clicktune[tuner]`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from clicktune.config import LocalServicesSettings
from clicktune.services.errors import PrerequisiteError
from clicktune.services.fetch import Maven
from clicktune.services.health import mlflow_healthy
from clicktune.services.process import LOOPBACK, owned_pid, tail

INSTALL_HINT = "pip install 'clicktune[tuner]' (or mlflow>=2.14)"


class MlflowService:
    """Start and find `mlflow server` under `root`; it needs no Java and no download."""

    name = "mlflow"
    needs_java = False

    def __init__(self, settings: LocalServicesSettings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.store = root / "mlflow.db"
        self.artifacts = root / "artifacts"
        self.pid_file = root / "mlflow.pid"
        self.log_file = root / "mlflow.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.settings.mlflow_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {"mlflow_port": self.settings.mlflow_port}

    @property
    def markers(self) -> list[str]:
        return ["mlflow", "server", self.backend_store_uri]

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.store.resolve()}"

    def installed(self) -> bool:
        return importlib.util.find_spec("mlflow") is not None

    def fetch(self, maven: Maven | None) -> str:
        """MLflow comes from PyPI with the environment, not from Maven: say how to get it."""
        raise PrerequisiteError(
            f"the MLflow tracking server needs the mlflow package, which {sys.executable} "
            f"lacks: {INSTALL_HINT}"
        )

    def install(self, java_home: Path | None) -> None:
        """Nothing to install: the package is the installation."""

    def command(self) -> list[str]:
        """`mlflow server` with its store and artifact proxy under `root`, on loopback."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts.resolve()),
            "--host",
            LOOPBACK,
            "--port",
            str(self.settings.mlflow_port),
            "--workers",
            str(self.settings.mlflow_workers),
        ]

    def launch(self, java_home: Path | None) -> None:
        """Start the server in its own session (so `down` stops its workers with it)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        # MLflow's job runner (a huey consumer with 10 workers) serves GenAI jobs clicktune
        # never submits: leave it off to save the memory.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")

    def healthy(self) -> bool:
        return mlflow_healthy(self.address)

    def pid(self) -> int | None:
        return owned_pid(self.pid_file, self.markers, program="python")

    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self.pid() is not None

    def log_tail(self, lines: int) -> list[str]:
        return tail(self.log_file, lines)

    def failure(self, what: str, lines: int = 20) -> str:
        """`what`, plus the last log lines, for a `StartError`."""
        body = "\n".join(f"  {line}" for line in self.log_tail(lines)) or "  (log is empty)"
        return f"{what}; last lines of {self.log_file}:\n{body}"
