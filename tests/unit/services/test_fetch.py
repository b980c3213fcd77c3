from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from clicktune.services.errors import FetchError
from clicktune.services.fetch import Maven, mvn_error_line, render_pom

NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def test_pom_lists_the_coordinates_as_dependencies() -> None:
    pom = ET.fromstring(render_pom("rt", ["org.apache.kafka:kafka_2.13:4.1.1", "a.b:c:1.0"]))
    deps = [
        (
            d.findtext("m:groupId", namespaces=NS),
            d.findtext("m:artifactId", namespaces=NS),
            d.findtext("m:version", namespaces=NS),
        )
        for d in pom.iterfind("m:dependencies/m:dependency", NS)
    ]
    assert deps == [("org.apache.kafka", "kafka_2.13", "4.1.1"), ("a.b", "c", "1.0")]


def test_the_first_error_line_of_mvn_is_shown() -> None:
    output = (
        "[INFO] x\n\x1b[0m\x1b[0m[ERROR] Failed to execute goal: Could not resolve a:b:9\n"
        "[ERROR] \n[ERROR] more\n"
    )
    assert mvn_error_line(output) == "[ERROR] Failed to execute goal: Could not resolve a:b:9"
    assert mvn_error_line("") == "mvn printed nothing"


def test_a_failed_download_raises_with_mvns_error_and_the_artifact(tmp_path: Path) -> None:
    fake_mvn = tmp_path / "mvn"
    fake_mvn.write_text(
        "#!/bin/sh\necho '[ERROR] Could not transfer artifact: 403 Forbidden'\nexit 1\n"
    )
    fake_mvn.chmod(0o755)
    with pytest.raises(FetchError) as err:
        Maven(str(fake_mvn)).copy(
            "org.opensearch.plugin:opensearch-knn:2.19.1.0:zip", tmp_path / "dl"
        )
    message = str(err.value)
    assert "org.opensearch.plugin:opensearch-knn:2.19.1.0:zip" in message
    assert "403 Forbidden" in message
