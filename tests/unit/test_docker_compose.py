"""The compose file cannot run here (no Docker engine); keep it consistent with the code.

What a broken stack would show first: a setting the code never reads (a typo in a `CLICKTUNE_*`
name is ignored, not refused), a secret with a default, a client speaking another protocol than
the broker's listener, a certificate path that nothing writes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.clients import kafka_options
from clicktune.config import CONFIG_ENV, DEFAULT_CONFIG, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
CLICKTUNE_SERVICES = ("ingest", "tuner", "serving")
# OpenSearch resolves relative certificate paths against its config directory.
OPENSEARCH_CONFIG_DIR = PurePosixPath("/usr/share/opensearch/config")
# `${NAME:?message}`: compose refuses to start without NAME and there is no default to fall back on.
REQUIRED_VAR = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]*\}")
# Any interpolation, `$${...}` (a literal dollar for the container's shell) excluded.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|SIGNING_KEY", re.IGNORECASE)


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    assert isinstance(env, dict), f"{service}: write `environment` as a mapping"
    return {key: str(value) for key, value in env.items()}


def _script(service: str) -> str:
    command = SERVICES[service]["command"]
    assert command[:2] == ["bash", "-c"], f"{service}: expected a bash -c start script"
    return str(command[2])


def _required_var(service: str, key: str) -> str:
    """The .env variable behind `key`; fails unless it is `${VAR:?...}`."""
    value = _env(service)[key]
    match = REQUIRED_VAR.fullmatch(value)
    assert match, f"{service}: {key}={value!r} must be ${{VAR:?message}} (no inline value)"
    return match["name"]


def _model_of(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _setting(env_name: str) -> FieldInfo | None:
    """The settings field that `CLICKTUNE_A__B__C` sets, or None when no field has that path."""
    model: type[BaseModel] | None = Settings
    field = None
    for part in env_name.removeprefix("CLICKTUNE_").lower().split("__"):
        if model is None or (field := model.model_fields.get(part)) is None:
            return None
        model = _model_of(field.annotation)
    return field


def _is_secret(key: str) -> bool:
    field = _setting(key) if key.startswith("CLICKTUNE_") else None
    typed_secret = field is not None and SecretStr in (
        field.annotation,
        *typing.get_args(field.annotation),
    )
    return typed_secret or bool(SECRET_NAME.search(key))


def _clicktune_names() -> Iterator[tuple[str, str]]:
    """(where, name) of every CLICKTUNE_* variable compose or an image sets."""
    for service in SERVICES:
        for key in _env(service):
            if key.startswith("CLICKTUNE_"):
                yield service, key
    for dockerfile in sorted(DOCKER.glob("*.Dockerfile")):
        for name in re.findall(r"\b(CLICKTUNE_[A-Z0-9_]+)=", dockerfile.read_text()):
            yield dockerfile.name, name


def _volume_at(service: str, path: PurePosixPath) -> tuple[str, PurePosixPath]:
    """(volume, path inside it) of `path` in `service`'s file system."""
    for mount in SERVICES[service].get("volumes", []):
        source, target = mount.split(":")[:2]
        if path.is_relative_to(target):
            return source, path.relative_to(target)
    raise AssertionError(f"{service}: no volume holds {path}")


def _mount_of(service: str, path: PurePosixPath) -> tuple[str, PurePosixPath, bool] | None:
    """(volume, path inside it, read-only) of the innermost mount holding `path` in `service`;
    None: the container's own disk."""
    mounts = [mount.split(":") for mount in SERVICES[service].get("volumes", [])]
    holding = [(source, PurePosixPath(target), mode) for source, target, *mode in mounts]
    holding = [m for m in holding if path.is_relative_to(m[1])]
    if not holding:
        return None
    source, target, mode = max(holding, key=lambda m: len(m[1].parts))
    return source, path.relative_to(target), mode == ["ro"]


def _image_home(dockerfile: str) -> PurePosixPath:
    match = re.search(r"CLICKTUNE_HOME=(\S+)", (DOCKER / dockerfile).read_text())
    assert match, f"{dockerfile} sets no CLICKTUNE_HOME"
    return PurePosixPath(match.group(1))


def test_serving_reads_the_tuner_s_models_and_keeps_its_home_writable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`clicktune serve` makes its spool (and an MLflow registry's cache) under its home at
    start: on a read-only home it would not start. The models it reads (registry, experiment)
    are the folder the tuner writes, read-only."""
    home = _image_home("serving.Dockerfile")
    assert home == _image_home("tuner.Dockerfile")
    assert 'Spool(settings.home / "spool"' in (ROOT / "clicktune/cli/serve.py").read_text()
    settings = _settings("serving", monkeypatch)
    written = [home / "spool"]
    if settings.registry.backend == "mlflow":
        written.append(PurePosixPath(settings.registry.cache_dir or home / "models/mlflow-cache"))
    for path in written:
        mount = _mount_of("serving", path)
        assert mount is None or not mount[2], f"serving writes {path}, mounted read-only"
    models = home / "models"
    tuner = _mount_of("tuner", models)
    assert tuner is not None and not tuner[2], f"tuner: {models} is not on a writable volume"
    assert _mount_of("serving", models) == (*tuner[:2], True), "serving: not the tuner's models"


def test_compose_names_real_clicktune_commands() -> None:
    runner = CliRunner()
    commands = [
        svc["command"]
        for svc in SERVICES.values()
        if isinstance(svc.get("command"), list) and svc["command"][0] == "clicktune"
    ]
    assert len(commands) == 3  # ingest, tuner, serving
    for command in commands:
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{command}: {result.output}"


def test_compose_services_have_health_checks_and_start_order() -> None:
    for name in ("opensearch", "kafka", "mlflow", "serving"):
        assert "healthcheck" in SERVICES[name], name
    for name in ("opensearch", "kafka"):
        certs = SERVICES[name]["depends_on"]["certs"]["condition"]
        assert certs == "service_completed_successfully", name
    for name in CLICKTUNE_SERVICES:
        assert SERVICES[name]["depends_on"]["opensearch"]["condition"] == "service_healthy"
        assert SERVICES[name]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_images_install_the_right_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    serving = (DOCKER / "serving.Dockerfile").read_text()
    tuner = (DOCKER / "tuner.Dockerfile").read_text()
    assert "torch" not in re.sub(r"#.*", "", serving).replace("find_spec('torch') is None", "")
    installed = re.search(r"pip install --no-cache-dir '\.\[([a-z,]+)\]'", tuner)
    assert installed is not None
    assert set(installed.group(1).split(",")) <= set(extras)


def test_opensearch_image_matches_local_services_version() -> None:
    from clicktune.config import LocalServicesSettings

    image = SERVICES["opensearch"]["image"]
    assert image.endswith(":" + LocalServicesSettings().opensearch_version)


def test_every_clicktune_variable_names_a_setting() -> None:
    names = list(_clicktune_names())
    assert len(names) >= 10
    unknown = [
        f"{where}: {name}" for where, name in names if name != CONFIG_ENV and not _setting(name)
    ]
    assert not unknown, f"no settings field has these names (typo?): {unknown}"


def test_opensearch_runs_its_security_plugin_with_tls_and_no_demo_config() -> None:
    env = _env("opensearch")
    assert env.get("DISABLE_SECURITY_PLUGIN", "false") != "true"
    assert env.get("plugins.security.disabled", "false") != "true"
    assert env["plugins.security.ssl.http.enabled"] == "true"
    # The demo installer brings demo certificates and demo users with well-known passwords.
    assert env["DISABLE_INSTALL_DEMO_CONFIG"] == "true"
    assert _required_var("opensearch", "OPENSEARCH_INITIAL_ADMIN_PASSWORD")
    assert "-env OPENSEARCH_INITIAL_ADMIN_PASSWORD" in _script("opensearch")


def test_only_serving_publishes_a_port() -> None:
    assert "ports" not in SERVICES["opensearch"], "OpenSearch must stay on the compose network"
    assert {name for name, svc in SERVICES.items() if svc.get("ports")} == {"serving"}


def test_every_secret_comes_from_a_required_variable() -> None:
    secrets = [(s, key) for s in SERVICES for key in _env(s) if _is_secret(key)]
    assert len(secrets) >= 5
    for service, key in secrets:
        _required_var(service, key)
    for match in INTERPOLATION.finditer(COMPOSE_TEXT):
        if SECRET_NAME.search(match["name"]):
            assert match["op"] == ":?", f"{match[0]}: a secret has no default; use ${{VAR:?...}}"


def test_clicktune_reaches_opensearch_over_https_as_the_user_it_creates() -> None:
    for service in CLICKTUNE_SERVICES:
        env = _env(service)
        url = urlsplit(env["CLICKTUNE_OPENSEARCH__URL"])
        assert (url.scheme, url.hostname, url.port) == ("https", "opensearch", 9200), service
        # internal_users.yml, written from OPENSEARCH_INITIAL_ADMIN_PASSWORD, holds this user.
        assert f'"{env["CLICKTUNE_OPENSEARCH__USERNAME"]}: {{hash:' in _script("opensearch")
        assert _required_var(service, "CLICKTUNE_OPENSEARCH__PASSWORD") == _required_var(
            "opensearch", "OPENSEARCH_INITIAL_ADMIN_PASSWORD"
        )
        assert env.get("CLICKTUNE_OPENSEARCH__VERIFY_CERTS", "true") == "true", service


def _kafka_listeners() -> dict[str, tuple[str, int, str]]:
    """Listener name -> (host, port, security protocol), as the broker binds them."""
    env = _env("kafka")
    protocols = dict(i.split(":") for i in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {}
    for item in env["KAFKA_LISTENERS"].split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port), protocols[name])
    return listeners


def test_kafka_listeners_off_loopback_use_sasl() -> None:
    exposed = {n: p for n, (host, _, p) in _kafka_listeners().items() if host != "127.0.0.1"}
    assert exposed, "no listener for the other containers"
    assert all(p.startswith("SASL_") for p in exposed.values()), exposed


def test_clicktune_kafka_settings_match_the_broker() -> None:
    kafka = _env("kafka")
    mechanisms = kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    script = _script("kafka")
    for service in CLICKTUNE_SERVICES:
        env = _env(service)
        host, _, port = env["CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS"].rpartition(":")
        assert host == "kafka", service
        [(listener, protocol)] = [
            (n, p) for n, (_, bound, p) in _kafka_listeners().items() if bound == int(port)
        ]
        assert env["CLICKTUNE_KAFKA__SECURITY_PROTOCOL"] == protocol, service
        mechanism = env["CLICKTUNE_KAFKA__SASL_MECHANISM"]
        assert mechanism in mechanisms, service
        # The broker's JAAS line for that listener and mechanism names the user, and its
        # password comes from the same .env variable as the client's.
        jaas = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config="
        [line] = [line for line in script.splitlines() if jaas in line]
        assert f'user_{env["CLICKTUNE_KAFKA__SASL_USERNAME"]}="' in line, service
        [broker_var] = re.findall(r"\$\$([A-Z_]+)", line)
        assert _required_var("kafka", broker_var) == _required_var(
            service, "CLICKTUNE_KAFKA__SASL_PASSWORD"
        )
        if protocol == "SASL_SSL":
            assert env["CLICKTUNE_KAFKA__SSL_CAFILE"], service


def test_tuner_tracks_to_the_mlflow_service() -> None:
    uri = urlsplit(_env("tuner")["CLICKTUNE_TUNER__MLFLOW_TRACKING_URI"])
    port = re.search(r"--port (\d+)", SERVICES["mlflow"]["command"])
    assert port is not None
    assert (uri.scheme, uri.hostname, uri.port) == ("http", "mlflow", int(port.group(1)))


def _settings(service: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`service`'s settings: the image's CLICKTUNE_CONFIG, plus compose's environment."""
    for key in list(os.environ):
        if key.startswith("CLICKTUNE_"):
            monkeypatch.delenv(key)
    for key, value in _env(service).items():
        monkeypatch.setenv(key, REQUIRED_VAR.sub(lambda m: f"from-{m['name']}", value))
    return load_settings(DEFAULT_CONFIG)


@pytest.mark.parametrize("service", CLICKTUNE_SERVICES)
def test_compose_environment_loads_into_settings_and_clients(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(service, monkeypatch)
    assert settings.opensearch.password is not None
    assert (
        settings.opensearch.password.get_secret_value() == "from-OPENSEARCH_INITIAL_ADMIN_PASSWORD"
    )
    assert settings.opensearch.verify_certs and settings.opensearch.ca_certs is not None
    options = kafka_options(settings.kafka)
    assert options["bootstrap_servers"] == ["kafka:9092"]
    assert options["sasl_plain_password"] == "from-KAFKA_CLICKTUNE_PASSWORD"
    assert options["ssl_cafile"] == str(settings.kafka.ssl_cafile)


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What certs.sh writes: one folder per volume it mounts, named as in the certs service."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    root = tmp_path_factory.mktemp("tls")
    env = dict(os.environ, TLS_ROOT=str(root), TLS_SERVICE_UID=str(os.getuid()))
    subprocess.run(["sh", str(DOCKER / "certs.sh")], env=env, check=True, capture_output=True)
    return root


def _issued_file(root: Path, service: str, path: str) -> Path:
    """The file certs.sh wrote that `service` reads at `path` (relative: OpenSearch's config)."""
    volume, inside = _volume_at(service, OPENSEARCH_CONFIG_DIR / path)
    certs_mounts = dict(mount.split(":")[:2] for mount in SERVICES["certs"]["volumes"])
    assert volume in certs_mounts, f"{service} reads {path} from {volume}, which certs never fills"
    file = root / PurePosixPath(certs_mounts[volume]).relative_to("/tls") / inside
    assert file.is_file(), f"{service} reads {path}: certs.sh does not write it"
    return file


def _tls_paths() -> Iterator[tuple[str, str]]:
    for key, value in _env("opensearch").items():
        if key.startswith("plugins.security.ssl.") and key.endswith("_filepath"):
            yield "opensearch", value
    yield "kafka", _env("kafka")["KAFKA_SSL_KEYSTORE_LOCATION"]
    for service in CLICKTUNE_SERVICES:
        yield service, _env(service)["CLICKTUNE_OPENSEARCH__CA_CERTS"]
        yield service, _env(service)["CLICKTUNE_KAFKA__SSL_CAFILE"]


def test_certs_script_writes_every_tls_file_the_services_read(issued: Path) -> None:
    paths = list(_tls_paths())
    assert len(paths) == 6 + 1 + 2 * len(CLICKTUNE_SERVICES)
    for service, path in paths:
        _issued_file(issued, service, path)
    # The start script reads the keystore password from beside the keystore.
    keystore = _env("kafka")["KAFKA_SSL_KEYSTORE_LOCATION"]
    assert f"{keystore}.password" in _script("kafka")
    assert Path(f"{_issued_file(issued, 'kafka', keystore)}.password").is_file()


def _verifies(root: Path, cert: Path, hostname: str) -> bool:
    ca = _issued_file(root, "ingest", _env("ingest")["CLICKTUNE_OPENSEARCH__CA_CERTS"])
    args = ["openssl", "verify", "-verify_hostname", hostname, "-CAfile", str(ca), str(cert)]
    return subprocess.run(args, capture_output=True).returncode == 0


def test_server_certificates_verify_for_the_hostnames_clients_use(issued: Path) -> None:
    pemcert = _env("opensearch")["plugins.security.ssl.http.pemcert_filepath"]
    opensearch = _issued_file(issued, "opensearch", pemcert)
    assert _verifies(issued, opensearch, "opensearch")
    assert not _verifies(issued, opensearch, "kafka")
    keystore = _issued_file(issued, "kafka", _env("kafka")["KAFKA_SSL_KEYSTORE_LOCATION"])
    kafka = issued / "kafka-server.pem"
    password = f"file:{keystore}.password"
    export = ["openssl", "pkcs12", "-in", str(keystore), "-passin", password, "-nokeys"]
    subprocess.run([*export, "-clcerts", "-out", str(kafka)], check=True, capture_output=True)
    assert _verifies(issued, kafka, "kafka")
