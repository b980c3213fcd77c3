"""The compose file cannot run here (no Docker engine); keep it consistent with the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from clicktune.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def test_compose_names_real_clicktune_commands() -> None:
    runner = CliRunner()
    commands = [
        svc["command"]
        for svc in COMPOSE["services"].values()
        if isinstance(svc.get("command"), list) and svc["command"][0] == "clicktune"
    ]
    assert len(commands) == 3  # ingest, tuner, serving
    for command in commands:
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{command}: {result.output}"


def test_compose_services_have_health_checks_and_start_order() -> None:
    services = COMPOSE["services"]
    for name in ("opensearch", "kafka", "mlflow", "serving"):
        assert "healthcheck" in services[name], name
    for name in ("ingest", "tuner", "serving"):
        assert services[name]["depends_on"]["opensearch"]["condition"] == "service_healthy"


def test_images_install_the_right_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    serving = (ROOT / "docker" / "serving.Dockerfile").read_text()
    tuner = (ROOT / "docker" / "tuner.Dockerfile").read_text()
    assert "torch" not in re.sub(r"#.*", "", serving).replace("find_spec('torch') is None", "")
    installed = re.search(r"pip install --no-cache-dir '\.\[([a-z,]+)\]'", tuner)
    assert installed is not None
    assert set(installed.group(1).split(",")) <= set(extras)


def test_opensearch_image_matches_local_services_version() -> None:
    from clicktune.config import LocalServicesSettings

    image = COMPOSE["services"]["opensearch"]["image"]
    assert image.endswith(":" + LocalServicesSettings().opensearch_version)
