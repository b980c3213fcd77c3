"""The scaled-out compose file cannot run here (no Docker engine); keep it consistent with the
code and with the README's "Scaling out" section.

compose.yaml's tests cover TLS, SASL and secrets on one node; compose.scale.yaml must keep all
of that (checked by comparison) and adds what these check: every `CLICKTUNE_*` variable names a
setting and loads, the services the README lists exist, the files the code still keeps under
`$CLICKTUNE_HOME` are on the volumes the README says, and the load balancer, the OpenSearch
nodes and the Ray cluster point at each other.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.config import DEFAULT_CONFIG, Settings, load_settings
from serving.config import ServingSettings
from tests.unit.test_docker_compose import REQUIRED_VAR, SECRET_NAME, _is_secret, _setting

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
TEXT = (DOCKER / "compose.scale.yaml").read_text()
COMPOSE = yaml.safe_load(TEXT)
SERVICES = COMPOSE["services"]
BASE = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
CLICKTUNE_SERVICES = ("ingest", "tuner", "serving")
# `${NAME:-default}`: the value compose uses when docker/.env leaves NAME out.
DEFAULTED_VAR = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*):-(?P<default>[^}]*)\}")
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: write `environment` as a mapping"
    return {key: str(value) for key, value in env.items()}


def _resolved(value: str) -> str:
    """`value` as compose passes it with docker/.env holding only the required variables."""
    value = REQUIRED_VAR.sub(lambda m: f"from-{m['name']}", value)
    return DEFAULTED_VAR.sub(lambda m: m["default"], value)


def _settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What `service` loads: the image's CLICKTUNE_CONFIG (configs/default.yaml) plus its env."""
    for key in list(os.environ):
        if key.startswith("CLICKTUNE_"):
            monkeypatch.delenv(key)
    for key, value in _env(service).items():
        if key.startswith("CLICKTUNE_"):
            monkeypatch.setenv(key, _resolved(value))
    return load_settings(DEFAULT_CONFIG)


def _mounts(service: str) -> dict[PurePosixPath, tuple[str, bool]]:
    """Container path -> (source, read-only) of each of `service`'s volumes."""
    found = {}
    for mount in SERVICES[service].get("volumes", []):
        source, target, *mode = mount.split(":")
        found[PurePosixPath(target)] = (source, mode == ["ro"])
    return found


def _mount_of(service: str, path: PurePosixPath) -> tuple[str, bool] | None:
    """(source, read-only) of the volume that holds `path` in `service`; None: its own disk."""
    holding = [target for target in _mounts(service) if path.is_relative_to(target)]
    return _mounts(service)[max(holding, key=lambda t: len(t.parts))] if holding else None


def _replicas(service: str) -> int:
    return int(SERVICES[service].get("deploy", {}).get("replicas", 1))


def _image_home(dockerfile: str) -> PurePosixPath:
    match = re.search(r"CLICKTUNE_HOME=(\S+)", (DOCKER / dockerfile).read_text())
    assert match, f"{dockerfile} sets no CLICKTUNE_HOME"
    return PurePosixPath(match.group(1))


def _readme_services() -> set[str]:
    """The services in the first column of the first table of the README's "Scaling out"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    table = re.search(r"\n(\|.*\n)+", section)
    assert table, "README: no table in 'Scaling out'"
    rows = table.group(0).strip().splitlines()[2:]  # after the header and its rule
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_services_the_readme_lists_are_the_compose_services() -> None:
    assert _readme_services() == set(SERVICES)


def test_every_clicktune_variable_names_a_setting() -> None:
    names = [(s, key) for s in SERVICES for key in _env(s) if key.startswith("CLICKTUNE_")]
    assert len(names) >= 3 * 20
    unknown = [f"{service}: {key}" for service, key in names if not _setting(key)]
    assert not unknown, f"no settings field has these names (typo?): {unknown}"


@pytest.mark.parametrize("service", CLICKTUNE_SERVICES)
def test_environment_loads_into_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(service, monkeypatch)
    assert settings.registry.backend == "mlflow"
    url = urlsplit(settings.registry.mlflow_url or "")
    port = re.search(r"--port (\d+)", SERVICES["mlflow"]["command"])
    assert port is not None
    assert (url.scheme, url.hostname, url.port) == ("http", "mlflow", int(port.group(1)))
    # Replicas of every index: a copy on the other node.
    assert settings.opensearch.internal_replicas == 1
    assert settings.ingest.index.replicas == 1 and settings.serving.index.replicas == 1
    assert settings.ingest.index.rollover.enabled is False  # untried with ISM; README says so


def test_keeps_the_security_of_compose_yaml() -> None:
    for name in ("certs", "kafka", "mlflow"):
        assert SERVICES[name] == BASE[name], f"{name} differs from compose.yaml's"
    # All of the single node's settings but its discovery type and heap.
    sizing = {"discovery.type", "OPENSEARCH_JAVA_OPTS"}
    single = {k: v for k, v in BASE["opensearch"]["environment"].items() if k not in sizing}
    for node in _opensearch_nodes():
        env = SERVICES[node]["environment"]
        assert single.items() - env.items() == set(), node
        assert SERVICES[node]["command"] == BASE["opensearch"]["command"], node
        certs = PurePosixPath("/usr/share/opensearch/config/certs")
        assert _mount_of(node, certs) == ("opensearch-tls", True), node
    for service in CLICKTUNE_SERVICES:
        env = SERVICES[service]["environment"]
        assert BASE[service]["environment"].items() - env.items() == set(), service
    assert "ports" not in SERVICES["serving"]
    assert {name for name, svc in SERVICES.items() if svc.get("ports")} == {"lb"}


def test_every_secret_comes_from_a_required_variable() -> None:
    secrets = [(s, key) for s in SERVICES for key in _env(s) if _is_secret(key)]
    assert len(secrets) >= 3 * 3
    for service, key in secrets:
        assert REQUIRED_VAR.fullmatch(_env(service)[key]), f"{service}: {key} needs ${{VAR:?...}}"
    for match in INTERPOLATION.finditer(TEXT):
        if SECRET_NAME.search(match["name"]):
            assert match["op"] == ":?", f"{match[0]}: a secret has no default"


def test_compose_names_real_clicktune_commands() -> None:
    runner = CliRunner()
    for service in CLICKTUNE_SERVICES:
        command = SERVICES[service]["command"]
        assert command[0] == "clicktune", service
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{command}: {result.output}"


def _opensearch_nodes() -> list[str]:
    return [n for n, s in SERVICES.items() if s.get("image", "").startswith("opensearchproject/")]


def test_opensearch_nodes_form_one_cluster_under_the_clients_name() -> None:
    nodes = _opensearch_nodes()
    assert len(nodes) == 2
    envs = [SERVICES[node]["environment"] for node in nodes]
    assert len({env["cluster.name"] for env in envs}) == 1
    managers = {
        n for n, env in zip(nodes, envs, strict=True) if "cluster_manager" in env["node.roles"]
    }
    for node, env in zip(nodes, envs, strict=True):
        assert env["node.name"] == node  # seed hosts and manager names are compose hostnames
        assert set(env["discovery.seed_hosts"].split(",")) == set(nodes), node
        assert "discovery.type" not in env, node
        initial = env.get("cluster.initial_cluster_manager_nodes")
        assert initial is None or set(initial.split(",")) <= managers, node
        aliases = SERVICES[node]["networks"]["default"]["aliases"]
        host = urlsplit(_env("ingest")["CLICKTUNE_OPENSEARCH__URL"]).hostname
        assert host in aliases, f"{node} is not reachable as {host!r}"
    assert any("cluster.initial_cluster_manager_nodes" in env for env in envs)
    data = {_mount_of(n, PurePosixPath("/usr/share/opensearch/data")) for n in nodes}
    assert len(data) == 2, "each node needs its own data volume"


def test_ingest_is_a_consumer_group_over_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    partitions = _settings("ingest", monkeypatch).ingest.topic_partitions
    assert 1 < _replicas("ingest") <= partitions


def test_serving_replicas_sit_behind_the_load_balancer() -> None:
    assert _replicas("serving") >= 2
    [(source, target)] = [m.split(":")[:2] for m in SERVICES["lb"]["volumes"]]
    assert target.startswith("/etc/nginx/conf.d/")
    conf = (DOCKER / source).read_text()
    served = ServingSettings()
    upstream = re.search(r"set \$(\w+) (http://[^;]+);", conf)
    assert upstream and f"proxy_pass ${upstream.group(1)};" in conf
    url = urlsplit(upstream.group(2))
    assert (url.hostname, url.port) == ("serving", served.port)
    assert _env("serving")["CLICKTUNE_SERVING__HOST"] == "0.0.0.0"
    # nginx's default (1 MiB) would refuse bodies serving takes.
    limit = re.search(r"client_max_body_size (\d+)m;", conf)
    assert limit and int(limit.group(1)) * 1024 * 1024 >= served.max_body_bytes
    # X-Forwarded-For is trusted from the network only the load balancer shares with serving.
    assert SERVICES["lb"]["networks"] == ["edge"] and "edge" in SERVICES["serving"]["networks"]
    [subnet] = [c["subnet"] for c in COMPOSE["networks"]["edge"]["ipam"]["config"]]
    trusted = ipaddress.ip_network(_env("serving")["FORWARDED_ALLOW_IPS"])
    assert trusted == ipaddress.ip_network(subnet)
    assert "X-Forwarded-For" in conf


def test_one_tuner_worker_and_a_standby() -> None:
    assert _replicas("tuner") == 2
    assert SERVICES["tuner"]["command"] == ["clicktune", "tuner", "run"]


# What the code still keeps under $CLICKTUNE_HOME, and the composition root that puts it there.
# When one moves into OpenSearch, this fails: update the compose file and the README's table.
SHARED_STATE = {
    "models": "clicktune/cli/state.py",  # experiment.json; the MLflow cache (registry.cache_dir)
    "batches": "clicktune/cli/state.py",  # serving.state.backend local (the example's)
    "reindex": "clicktune/cli/state.py",  # serving.state.backend local (the example's)
}


@pytest.mark.parametrize("folder", sorted(SHARED_STATE))
def test_files_the_tuner_keeps_are_on_shared_volumes(folder: str) -> None:
    assert f'settings.home / "{folder}"' in (ROOT / SHARED_STATE[folder]).read_text()
    path = _image_home("tuner.Dockerfile") / folder
    mount = _mount_of("tuner", path)
    assert mount is not None and mount[0] in COMPOSE["volumes"], f"tuner: {path} is not shared"
    assert mount[1] is False, f"tuner writes {path}"
    # APScheduler's job store is each worker's own: two schedulers must not share one.
    assert _mount_of("tuner", _image_home("tuner.Dockerfile") / "tuner") is None


def test_serving_reads_the_experiment_and_writes_only_its_own_folders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = _image_home("serving.Dockerfile")
    assert home == _image_home("tuner.Dockerfile")
    experiment = home / "models" / "experiment.json"  # serving/rollout/ab.py ExperimentStore
    assert "experiment_store(settings" in (ROOT / "clicktune/cli/serve.py").read_text()
    assert (
        'ExperimentStore(settings.home / "models")' in (ROOT / "clicktune/cli/state.py").read_text()
    )
    shared = _mount_of("tuner", experiment)
    assert shared is not None and _mount_of("serving", experiment) == (shared[0], True)
    cache = _settings("serving", monkeypatch).registry.cache_dir
    assert cache is not None
    for written in (PurePosixPath(cache), home / "spool"):
        assert _mount_of("serving", written) is None, f"serving writes {written} on its own disk"
    # ... which the image makes writable for its user.
    assert (
        f"install -d -o clicktune -g clicktune {home}"
        in (DOCKER / "serving.Dockerfile").read_text()
    )


def test_ray_cluster_runs_in_its_profile_where_the_tuner_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    head, worker = SERVICES["ray-head"], SERVICES["ray-worker"]
    assert head["profiles"] == worker["profiles"] == ["ray"]
    port = next(a.split("=")[1] for a in head["command"] if a.startswith("--port="))
    address = next(a.split("=")[1] for a in worker["command"] if a.startswith("--address="))
    assert address == f"ray-head:{port}"
    reindex = _settings("tuner", monkeypatch).serving.reindex
    assert reindex.ray.address == address
    assert (
        reindex.engine == "local"
    )  # the stack starts without the profile; REINDEX_ENGINE=ray opts in
    for name in ("ray-head", "ray-worker"):
        assert SERVICES[name]["build"]["dockerfile"] == "docker/tuner.Dockerfile", name
        # The actors open the driver's model files and CA file at the driver's paths.
        for path in (
            _image_home("tuner.Dockerfile") / "models",
            PurePosixPath("/etc/clicktune/tls"),
        ):
            ours, drivers = _mount_of(name, path), _mount_of("tuner", path)
            assert ours and drivers and ours[0] == drivers[0], f"{name}: {path}"
    installed = re.search(
        r"pip install --no-cache-dir '\.\[([a-z,]+)\]'", (DOCKER / "tuner.Dockerfile").read_text()
    )
    assert installed and "scale" in installed.group(1).split(",")
