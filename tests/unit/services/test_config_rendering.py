from __future__ import annotations

import re
import zipfile
from pathlib import Path

import yaml

from clicktune.config import LocalServicesSettings
from clicktune.services.kafka import render_server_properties
from clicktune.services.opensearch import module_descriptor, painless_jars, render_config
from clicktune.services.unpack import unzip

SETTINGS = LocalServicesSettings(
    opensearch_http_port=29200,
    opensearch_transport_port=29300,
    kafka_port=29092,
    kafka_controller_port=29093,
)


def test_opensearch_config_binds_loopback_on_the_configured_ports() -> None:
    config = yaml.safe_load(render_config(SETTINGS, Path("/d"), Path("/l")))
    assert config["network.host"] == "127.0.0.1"
    assert config["http.port"] == 29200
    assert config["transport.port"] == 29300
    assert config["discovery.type"] == "single-node"
    assert config["path.data"] == "/d"


def test_ml_commons_may_call_an_embedding_service_on_loopback_only() -> None:
    config = yaml.safe_load(render_config(SETTINGS, Path("/d"), Path("/l")))
    assert config["plugins.ml_commons.only_run_on_ml_node"] is False
    assert config["plugins.ml_commons.connector.private_ip_enabled"] is True
    assert config["plugins.ml_commons.native_memory_threshold"] == 100
    patterns = config["plugins.ml_commons.trusted_connector_endpoints_regex"]

    def trusted(url: str) -> bool:
        return any(re.match(p, url) for p in patterns)

    assert trusted("http://127.0.0.1:8123/v1/embeddings")
    assert trusted("http://localhost:9/")
    assert not trusted("http://10.0.0.1:8123/v1/embeddings")
    assert not trusted("http://127.0.0.1.evil.com:80/")


def test_kafka_is_one_kraft_node_on_the_configured_ports() -> None:
    text = render_server_properties(SETTINGS, Path("/data"))
    props = dict(line.split("=", 1) for line in text.splitlines() if line)
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["num.partitions"] == "1"
    assert props["auto.create.topics.enable"] == "true"
    assert props["log.dirs"] == "/data"


def test_painless_keeps_only_the_jars_the_server_lacks() -> None:
    jars = [
        Path(n)
        for n in (
            "lang-painless-2.19.1.jar",
            "antlr4-runtime-4.13.1.jar",
            "asm-9.7.jar",
            "opensearch-scripting-painless-spi-2.19.1.jar",
        )
    ]
    server_libs = ["asm-9.7.jar", "opensearch-2.19.1.jar", "lucene-core-9.12.1.jar"]
    kept = [j.name for j in painless_jars(jars, server_libs)]
    assert kept == [
        "lang-painless-2.19.1.jar",
        "antlr4-runtime-4.13.1.jar",
        "opensearch-scripting-painless-spi-2.19.1.jar",
    ]


def test_module_descriptor_names_class_version_and_parent() -> None:
    text = module_descriptor("analysis-common", "org.x.Plugin", "2.19.1", "lang-painless")
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["classname"] == "org.x.Plugin"
    assert props["opensearch.version"] == "2.19.1"
    assert props["extended.plugins"] == "lang-painless"


def test_unzip_keeps_executable_bits_and_strips_the_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "dist.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("opensearch-2.19.1/bin/opensearch")
        info.external_attr = 0o755 << 16
        zf.writestr(info, "#!/bin/sh\n")
        zf.writestr("opensearch-2.19.1/config/opensearch.yml", "")
    unzip(archive, tmp_path / "out", strip_top=True)
    assert (tmp_path / "out" / "bin" / "opensearch").stat().st_mode & 0o111
    assert (tmp_path / "out" / "config" / "opensearch.yml").is_file()


def test_an_installed_distribution_is_recognised_so_up_does_not_reinstall(tmp_path: Path) -> None:
    from clicktune.config import LocalServicesSettings
    from clicktune.services.opensearch import PLUGIN_FOLDERS, OpenSearchService

    service = OpenSearchService(LocalServicesSettings(), tmp_path)
    assert not service.installed()
    for folder in PLUGIN_FOLDERS[:-1]:
        (service.dist / "plugins" / folder).mkdir(parents=True)
    assert not service.installed()  # one plugin missing: install again
    (service.dist / "plugins" / PLUGIN_FOLDERS[-1]).mkdir()
    assert service.installed()
