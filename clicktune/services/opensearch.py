"""The local OpenSearch: Maven Central's integ-test-zip plus the modules and plugins clicktune uses.

The integ-test-zip ships only the transport-netty4 module and no JDK, so `lang-painless` and
`analysis-common` are added as modules from their Maven jars, then the k-NN, job-scheduler,
ml-commons and neural-search plugins are installed in that order (ml-commons extends
job-scheduler, neural-search extends k-NN). OpenSearch refuses to run as root, so as root it runs
as `services.run_as_user`.

With `services.opensearch_nodes` N > 1 the same distribution runs N nodes of one cluster on
loopback: node 1 as before (cluster manager and data, `services.opensearch_*_port`), node n a
data node on those ports + n-1 with its own config, data and logs under `node-<n>/`. Only node 1 is
cluster-manager eligible, so the cluster survives losing any other node (not node 1: surviving
the loss of any node takes three manager-eligible nodes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from clicktune.config import LocalServicesSettings
from clicktune.services import accounts, preflight
from clicktune.services.errors import InstallError, StartError
from clicktune.services.fetch import Maven, render_pom
from clicktune.services.health import opensearch_healthy
from clicktune.services.process import LOOPBACK, owned_pid, tail
from clicktune.services.unpack import unzip

PLUGINS = ("opensearch-knn", "opensearch-job-scheduler", "opensearch-ml-plugin", "neural-search")
# The folders the plugins install into (as `_cat/plugins` names them), in the same order.
PLUGIN_FOLDERS = (
    "opensearch-knn",
    "opensearch-job-scheduler",
    "opensearch-ml",
    "opensearch-neural-search",
)
PAINLESS_CLASS = "org.opensearch.painless.PainlessPlugin"
ANALYSIS_CLASS = "org.opensearch.analysis.common.CommonAnalysisPlugin"
PAINLESS_POLICY = """grant {
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
"""
# Lets ml-commons connectors call clicktune's embedding service on loopback, on any port.
TRUSTED_ENDPOINTS = [r"^http://127\.0\.0\.1:[0-9]+/.*$", r"^http://localhost:[0-9]+/.*$"]
CLUSTER_NAME = "clicktune"
PID_GRACE_S = 30.0


def module_descriptor(name: str, classname: str, version: str, extends: str = "") -> str:
    """The `plugin-descriptor.properties` that makes a folder of jars an OpenSearch module."""
    return (
        f"description={name}\nversion={version}\nname={name}\nclassname={classname}\n"
        f"java.version=11\nopensearch.version={version}\nextended.plugins={extends}\n"
        "has.native.controller=false\n"
    )


def painless_jars(candidates: list[Path], server_libs: list[str]) -> list[Path]:
    """Painless's own jars: those whose name (before the version) the server's lib/ lacks."""
    kept = []
    for jar in candidates:
        stem = re.split(r"-\d", jar.name, maxsplit=1)[0]
        if not any(lib.startswith(stem) for lib in server_libs):
            kept.append(jar)
    return kept


def node_name(node: int) -> str:
    return "clicktune-local" if node == 1 else f"clicktune-node-{node}"


def render_config(settings: LocalServicesSettings, data: Path, logs: Path, node: int = 1) -> str:
    """opensearch.yml: node `node` on loopback on its ports, ml-commons opened up."""
    config: dict[str, object] = {
        "cluster.name": CLUSTER_NAME,
        "node.name": node_name(node),
        "network.host": LOOPBACK,
        "http.port": settings.opensearch_http_port + node - 1,
        "transport.port": settings.opensearch_transport_port + node - 1,
        **_discovery(settings, node),
        "path.data": str(data),
        "path.logs": str(logs),
        "cluster.routing.allocation.disk.threshold_enabled": False,
        "plugins.ml_commons.only_run_on_ml_node": False,
        "plugins.ml_commons.connector.private_ip_enabled": True,
        "plugins.ml_commons.trusted_connector_endpoints_regex": TRUSTED_ENDPOINTS,
        "plugins.ml_commons.native_memory_threshold": 100,
    }
    return yaml.safe_dump(config, sort_keys=False)


def _discovery(settings: LocalServicesSettings, node: int) -> dict[str, object]:
    """One node: single-node discovery. Several: every node seeds from all, node 1 bootstraps."""
    if settings.opensearch_nodes == 1:
        return {"discovery.type": "single-node"}
    first = settings.opensearch_transport_port
    seeds = [f"{LOOPBACK}:{first + i}" for i in range(settings.opensearch_nodes)]
    found: dict[str, object] = {
        "discovery.seed_hosts": seeds,
        "cluster.initial_cluster_manager_nodes": [node_name(1)],
    }
    if node > 1:
        found["node.roles"] = ["data", "ingest"]
    return found


class OpenSearchService:
    """Fetch, install, start and find node `node` of the local OpenSearch under `root`.

    Node 1 keeps its config in the distribution and its data in `root`; node n > 1 has its own
    `root/node-<n>/` (config, data, logs, pid file) and shares the installed distribution."""

    needs_java = True

    def __init__(self, settings: LocalServicesSettings, root: Path, node: int = 1) -> None:
        self.settings = settings
        self.root = root
        self.node = node
        self.name = "opensearch" if node == 1 else f"opensearch-node-{node}"
        self.version = settings.opensearch_version
        self.dist = root / f"opensearch-{self.version}"
        self.downloads = root / "downloads"
        self.home = root if node == 1 else root / f"node-{node}"
        self.conf = self.dist / "config" if node == 1 else self.home / "config"
        self.data = self.home / "data"
        self.logs = self.home / "logs"
        self.pid_file = self.home / "opensearch.pid"
        self.log_file = self.logs / f"{CLUSTER_NAME}.log"
        self.stdout_log = self.logs / "stdout.log"
        self._launched_at: float | None = None

    @property
    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['opensearch_http_port']}"

    @property
    def ports(self) -> dict[str, int]:
        offset = self.node - 1
        return {
            "opensearch_http_port": self.settings.opensearch_http_port + offset,
            "opensearch_transport_port": self.settings.opensearch_transport_port + offset,
        }

    @property
    def markers(self) -> list[str]:
        found = ["org.opensearch.bootstrap.OpenSearch", f"-Dopensearch.path.home={self.dist}"]
        if self.node > 1:
            found.append(f"-Dopensearch.path.conf={self.conf}")
        return found

    def installed(self) -> bool:
        return all((self.dist / "plugins" / folder).is_dir() for folder in PLUGIN_FOLDERS)

    def fetch(self, maven: Maven | None) -> str:
        """Download what is not already under downloads/; return what was fetched, for the log."""
        maven = maven if maven is not None else Maven(preflight.maven())
        v = self.version
        wanted = {
            f"opensearch-{v}.zip": f"org.opensearch.distribution.integ-test-zip:opensearch:{v}:zip",
            **{f"{p}-{v}.0.zip": f"org.opensearch.plugin:{p}:{v}.0:zip" for p in PLUGINS},
            f"analysis-common-{v}.jar": f"org.opensearch.plugin:analysis-common:{v}",
        }
        for filename, artifact in wanted.items():
            if not (self.downloads / filename).is_file():
                maven.copy(artifact, self.downloads)
        painless = self.root / "painless"
        if not (painless / f"lang-painless-{v}.jar").is_file():
            pom = self.root / "modules-pom.xml"
            pom.write_text(render_pom("os-modules", [f"org.opensearch.plugin:lang-painless:{v}"]))
            maven.copy_dependencies(pom, painless, what=f"org.opensearch.plugin:lang-painless:{v}")
        return f"opensearch {v} + {len(PLUGINS)} plugins"

    def install(self, java_home: Path | None) -> None:
        """Unpack the distribution, add the modules, install the plugins; atomic by rename."""
        java_home = java_home if java_home is not None else preflight.java_home()
        staging = self.root / f"opensearch-{self.version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        unzip(self.downloads / f"opensearch-{self.version}.zip", staging, strip_top=True)
        self._add_modules(staging)
        for plugin in PLUGINS:
            self._install_plugin(staging, plugin, java_home)
        shutil.rmtree(self.dist, ignore_errors=True)
        staging.rename(self.dist)

    def _add_modules(self, dist: Path) -> None:
        libs = [p.name for p in (dist / "lib").iterdir()]
        jars = painless_jars(sorted((self.root / "painless").glob("*.jar")), libs)
        self._module(dist, "lang-painless", PAINLESS_CLASS, "", jars)
        (dist / "modules" / "lang-painless" / "plugin-security.policy").write_text(PAINLESS_POLICY)
        analysis = [self.downloads / f"analysis-common-{self.version}.jar"]
        self._module(dist, "analysis-common", ANALYSIS_CLASS, "lang-painless", analysis)

    def _module(self, dist: Path, name: str, cls: str, extends: str, jars: list[Path]) -> None:
        folder = dist / "modules" / name
        folder.mkdir(parents=True, exist_ok=True)
        for jar in jars:
            shutil.copy2(jar, folder / jar.name)
        descriptor = module_descriptor(name, cls, self.version, extends)
        (folder / "plugin-descriptor.properties").write_text(descriptor)

    def _install_plugin(self, dist: Path, plugin: str, java_home: Path) -> None:
        zip_path = self.downloads / f"{plugin}-{self.version}.0.zip"
        done = subprocess.run(
            [str(dist / "bin" / "opensearch-plugin"), "install", "--batch", zip_path.as_uri()],
            env={**os.environ, "OPENSEARCH_JAVA_HOME": str(java_home)},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise InstallError(f"opensearch-plugin could not install {zip_path.name}: {last[0]}")

    def launch(self, java_home: Path | None) -> None:
        """Write the config and start the daemon (as `run_as_user` when root)."""
        java_home = java_home if java_home is not None else preflight.java_home()
        for folder in (self.data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        if self.node > 1:  # its own copy: a keystore and opensearch.yml of its own
            shutil.copytree(self.dist / "config", self.conf, dirs_exist_ok=True)
        (self.conf / "opensearch.yml").write_text(
            render_config(self.settings, self.data, self.logs, self.node)
        )
        self.pid_file.unlink(missing_ok=True)
        prefix = accounts.run_as_prefix(self.settings.run_as_user, self.root)
        s = self.settings
        heap = s.opensearch_heap if self.node == 1 else s.opensearch_extra_heap
        command = [
            *prefix,
            "env",
            f"OPENSEARCH_JAVA_HOME={java_home}",
            f"OPENSEARCH_JAVA_OPTS=-Xms{heap} -Xmx{heap}",
            f"OPENSEARCH_PATH_CONF={self.conf}",
            str(self.dist / "bin" / "opensearch"),
            "-d",
            "-p",
            str(self.pid_file),
        ]
        self._launched_at = time.monotonic()
        # Never pipe the output of `opensearch -d`: the daemon keeps the pipe open forever.
        with self.stdout_log.open("ab") as out:
            done = subprocess.run(
                command,
                # jvm.options names gc and heap-dump paths relative to the working directory
                cwd=self.home if self.node > 1 else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                check=False,
                timeout=120,
            )
        if done.returncode != 0:
            raise StartError(self.failure(f"`opensearch -d` exited with {done.returncode}"))

    def healthy(self) -> bool:
        return opensearch_healthy(self.address)

    def pid(self) -> int | None:
        return owned_pid(self.pid_file, self.markers)

    def alive(self) -> bool:
        """False once the started process is gone (it writes its pid file early on start)."""
        if self.pid_file.exists():
            return self.pid() is not None
        started = self._launched_at or 0.0
        return time.monotonic() - started < PID_GRACE_S

    def log_tail(self, lines: int) -> list[str]:
        return tail(self.log_file, lines) or tail(self.stdout_log, lines)

    def failure(self, what: str, lines: int = 20) -> str:
        """`what`, plus the last log lines, for a `StartError`."""
        log = self.log_file if self.log_file.exists() else self.stdout_log
        body = "\n".join(f"  {line}" for line in self.log_tail(lines)) or "  (log is empty)"
        return f"{what}; last lines of {log}:\n{body}"
