"""The local Kafka: the broker jars from Maven Central run as one KRaft node (broker+controller)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from clicktune.clients import kafka_options
from clicktune.config import KafkaSettings, LocalServicesSettings
from clicktune.services import preflight
from clicktune.services.errors import StartError
from clicktune.services.fetch import Maven, render_pom
from clicktune.services.health import kafka_healthy
from clicktune.services.process import LOOPBACK, owned_pid, tail

# The broker's POM brings no log binding; slf4j-api resolves to 1.7.x, hence the slf4j 1.x one.
LOG4J = "2.24.3"
LOG4J_PROPERTIES = """rootLogger.level=info
rootLogger.appenderRef.o.ref=O
appender.o.type=Console
appender.o.name=O
appender.o.layout.type=PatternLayout
appender.o.layout.pattern=%d %p %c - %m%n
"""


def render_server_properties(settings: LocalServicesSettings, data: Path) -> str:
    """server.properties of one combined KRaft node on loopback on the configured ports."""
    port, controller = settings.kafka_port, settings.kafka_controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{LOOPBACK}:{controller}",
            f"listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller}",
            f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "",
        ]
    )


class KafkaService:
    """Fetch, format, start and find the local Kafka under `root`."""

    name = "kafka"
    needs_java = True

    def __init__(self, settings: LocalServicesSettings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.version = settings.kafka_version
        self.libs = root / f"kafka-{self.version}" / "libs"
        self.data = root / "data"
        self.config = root / "server.properties"
        self.pid_file = root / "kafka.pid"
        self.log_file = root / "kafka.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.settings.kafka_port}"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "kafka_port": self.settings.kafka_port,
            "kafka_controller_port": self.settings.kafka_controller_port,
        }

    @property
    def markers(self) -> list[str]:
        return ["kafka.Kafka", str(self.config)]

    def installed(self) -> bool:
        return self.libs.is_dir()

    def fetch(self, maven: Maven | None) -> str:
        """Download the broker's runtime jars into a staging folder, then rename it into place."""
        maven = maven if maven is not None else Maven(preflight.maven())
        coordinates = [
            f"org.apache.kafka:kafka_2.13:{self.version}",
            f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J}",
            f"org.apache.logging.log4j:log4j-core:{LOG4J}",
        ]
        pom = self.root / "pom.xml"
        self.root.mkdir(parents=True, exist_ok=True)
        pom.write_text(render_pom("kafka-runtime", coordinates))
        staging = self.libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        maven.copy_dependencies(pom, staging, what=", ".join(coordinates))
        staging.rename(self.libs)
        return f"kafka {self.version}"

    def install(self, java_home: Path | None) -> None:
        """Nothing to unpack: the jars are the installation."""

    def launch(self, java_home: Path | None) -> None:
        """Write the config, format the storage once, and start the broker in the background."""
        java_home = java_home if java_home is not None else preflight.java_home()
        java = str(java_home / "bin" / "java")
        classpath = f"{self.libs}/*"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config.write_text(render_server_properties(self.settings, self.data))
        log4j = self.root / "log4j2.properties"
        log4j.write_text(LOG4J_PROPERTIES)
        if not (self.data / "meta.properties").is_file():
            self._format(java, classpath)
        heap = self.settings.kafka_heap
        command = [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.config),
        ]
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")

    def _format(self, java: str, classpath: str) -> None:
        tool = [java, "-cp", classpath, "kafka.tools.StorageTool"]
        uuid = subprocess.run([*tool, "random-uuid"], capture_output=True, text=True, check=False)
        format_cmd = [
            *tool,
            "format",
            "-t",
            uuid.stdout.strip(),
            "-c",
            str(self.config),
            "--ignore-formatted",
        ]
        done = subprocess.run(format_cmd, capture_output=True, text=True, check=False)
        if uuid.returncode != 0 or done.returncode != 0:
            said = (uuid.stderr + done.stderr + done.stdout).strip().splitlines()[-1:] or ["?"]
            raise StartError(f"could not format Kafka's storage in {self.data}: {said[0]}")

    def healthy(self) -> bool:
        options = kafka_options(KafkaSettings(bootstrap_servers=self.address))
        return kafka_healthy(options, timeout_s=3.0)

    def pid(self) -> int | None:
        return owned_pid(self.pid_file, self.markers)

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
