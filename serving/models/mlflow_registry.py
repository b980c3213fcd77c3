"""The MLflow model registry as clicktune's registry of record, spoken to over its REST API.

How clicktune's registry maps onto MLflow (one registered model, `model_name`):

- a version (`v3`, `base`) is an MLflow model version (MLflow numbers it) with the tag
  `clicktune.version`; its files are the artifacts of one run of `experiment`, under `model/`,
  uploaded through the server's artifact proxy with a manifest
  (serving/models/model_manifest.py) whose sha256 is the tag `clicktune.sha256`; the tag
  `clicktune.meta` holds what `list()` shows;
- aliases (`production`, `candidate`, arms) are the registered model's MLflow aliases;
- alias history: MLflow keeps none, so each alias's last `HISTORY_KEPT` targets are a JSON list
  in the registered-model tag `clicktune.alias_history.<alias>`;
- an archived version keeps its MLflow version, tagged `clicktune.archived`: hidden, its name
  never given again.

Files are cached under `cache/versions/<version>/` (serving/models/model_cache.py): checked
against the manifest when downloaded, and once per process when found there.

MLflow has no transactions: an alias move is atomic on the server, but the history tag is read,
changed and written, so two writers moving one alias at the same instant can lose a history entry
(the local registry's file lock has no MLflow equivalent; the tuner worker's lease fences writes).
"""

from __future__ import annotations

import builtins
import json
import shutil
import time
from pathlib import Path
from typing import Any

from serving.errors import MlflowApiError, RegistryError, UnknownModelError
from serving.models.mlflow_rest import MlflowRest
from serving.models.model_cache import ModelCache
from serving.models.model_dir import read_model_meta
from serving.models.model_manifest import write_manifest
from serving.models.registry import (
    HISTORY_KEPT,
    ModelVersion,
    check_name,
    next_version,
    stamp_version,
    version_of,
)

__all__ = ["MlflowRegistry"]

VERSION_TAG = "clicktune.version"
SHA256_TAG = "clicktune.sha256"
META_TAG = "clicktune.meta"
ARCHIVED_TAG = "clicktune.archived"
HISTORY_TAG = "clicktune.alias_history."
META_KEYS = ("dimension", "kind", "parent", "created_at", "metrics", "document_model")
MAX_TAG_CHARS = 5000  # MLflow's limit on a model version tag's value
PROXY_SCHEME = "mlflow-artifacts:"

Raw = dict[str, Any]  # a model version as the REST API returns it


class MlflowRegistry:
    """Model versions, aliases and files in the MLflow model registry, cached under `cache`."""

    def __init__(
        self,
        rest: MlflowRest,
        cache: Path,
        model_name: str = "clicktune",
        experiment: str = "clicktune-registry",
    ) -> None:
        self.rest, self.cache = rest, ModelCache(cache)
        self.model_name, self.experiment = model_name, experiment

    @property
    def location(self) -> str:
        """Where the registry lives, for messages."""
        return f"{self.rest.url} (MLflow registered model {self.model_name!r})"

    def aliases(self) -> dict[str, str]:
        """Alias name -> version."""
        return self._aliases(self._model(), self._live())

    def get(self, ref: str) -> ModelVersion:
        """The version named `ref`, or the version the alias `ref` points at, downloaded into
        the cache (and checked) unless a checked copy is there."""
        live = self._live()
        aliases = self._aliases(self._model(), live)
        raw = live.get(aliases.get(ref, ref))
        if raw is None:
            raise UnknownModelError(
                f"unknown model {ref!r} in {self.location}: tried it as an alias (aliases "
                f"{sorted(aliases)}) and as a version (tag {VERSION_TAG}: {sorted(live)})",
                ref,
            )
        version = _tags(raw)[VERSION_TAG]
        path = self._cached(raw)
        return version_of(version, path, read_model_meta(path, error=RegistryError), aliases)

    def list(self) -> builtins.list[ModelVersion]:
        """Every live version, oldest first, from its tags: nothing is downloaded, so `path` is
        where `get` caches it."""
        live = self._live()
        aliases = self._aliases(self._model(), live)
        versions = [
            version_of(name, self.cache.path(name), json.loads(_tags(raw)[META_TAG]), aliases)
            for name, raw in live.items()
        ]
        return sorted(versions, key=lambda v: (v.created_at, v.version))

    def add(self, src_dir: Path, version: str | None = None) -> ModelVersion:
        """Upload the model directory `src_dir` as `version` (next `v<N>` when None): a run's
        artifacts with their manifest, then an MLflow model version; the copy stays cached."""
        src_dir = Path(src_dir)
        meta = read_model_meta(src_dir, error=RegistryError)
        if version is not None:
            check_name(version, "version")
        taken = [_tags(raw).get(VERSION_TAG, "") for raw in self._search()]
        version = version if version is not None else next_version(taken)
        if version in taken:
            raise RegistryError(f"model version {version!r} already exists in {self.location}")
        tmp = self.cache.staging()
        try:
            shutil.copytree(src_dir, tmp, dirs_exist_ok=True)
            stamp_version(tmp, version)
            self._upload(tmp, version, write_manifest(tmp), meta)
            target = self.cache.place(tmp, version)
        except OSError as exc:
            raise RegistryError(f"cannot add {src_dir} as {version!r}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return version_of(version, target, read_model_meta(target), self.aliases())

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at an existing `version` and record it in the alias's history."""
        check_name(alias, "alias")
        live = self._live()
        if alias in live:
            raise RegistryError(f"alias {alias!r} would shadow the model version of that name")
        if version not in live:
            raise RegistryError(
                f"cannot point alias {alias!r} at unknown version {version!r} in "
                f"{self.location}: versions {sorted(live)}"
            )
        model = self._model()
        current = self._aliases(model, live).get(alias)
        targets = _history(model, alias) or ([current] if current else [])
        if not targets or targets[-1] != version:
            targets = [*targets, version][-HISTORY_KEPT:]
        self._write_history(alias, targets)
        self._move_alias(alias, live[version])

    def alias_history(self, alias: str) -> builtins.list[str]:
        """The versions `alias` pointed at, oldest first; the last one is the current target."""
        return _history(self._model(), alias)

    def rollback_alias(self, alias: str) -> str:
        """Point `alias` back at the version it named before the current one; return it."""
        targets = self.alias_history(alias)
        if len(targets) < 2:
            raise RegistryError(
                f"alias {alias!r} has no previous version to roll back to (history: {targets})"
            )
        previous, live = targets[-2], self._live()
        if previous not in live:
            raise RegistryError(f"cannot roll {alias!r} back: version {previous!r} is gone")
        self._write_history(alias, targets[:-1])
        self._move_alias(alias, live[previous])
        return previous

    def archive(self, version: str, drop_aliases: tuple[str, ...] = ("candidate",)) -> str:
        """Hide `version` (tag `clicktune.archived`; its name is never given again) and drop it
        from the cache; the aliases in `drop_aliases` that name it are deleted, any other alias
        naming it refuses the archive. Returns where it is kept."""
        live = self._live()
        aliases = self._aliases(self._model(), live)
        kept = sorted(a for a, v in aliases.items() if v == version and a not in drop_aliases)
        if kept:
            raise RegistryError(f"cannot archive {version!r}: alias(es) {kept} still name it")
        if version not in live:
            raise RegistryError(f"cannot archive unknown version {version!r} in {self.location}")
        for alias in sorted(a for a, v in aliases.items() if v == version):
            self.rest.delete("registered-models/alias", {"name": self.model_name, "alias": alias})
        number = live[version]["version"]
        self.rest.post(
            "model-versions/set-tag",
            {"name": self.model_name, "version": number, "key": ARCHIVED_TAG, "value": "true"},
        )
        self.cache.drop(version)
        return f"{self.location} version {number} (tagged {ARCHIVED_TAG})"

    def _model(self) -> dict[str, Any]:
        """The registered model (aliases, tags); empty before anything was added."""
        try:
            found = self.rest.get("registered-models/get", name=self.model_name)
        except MlflowApiError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return dict(found.get("registered_model") or {})

    def _search(self) -> builtins.list[Raw]:
        """Every MLflow version of the registered model, archived ones too."""
        found: builtins.list[Raw] = []
        token = None
        while True:
            params = {"filter": f"name='{self.model_name}'", "max_results": 1000}
            page = self.rest.get("model-versions/search", **params, page_token=token or "")
            found.extend(page.get("model_versions") or [])
            token = page.get("next_page_token")
            if not token:
                return found

    def _live(self) -> dict[str, Raw]:
        """clicktune version -> its MLflow version, archived ones and foreign ones left out."""
        live = {}
        for raw in self._search():
            tags = _tags(raw)
            if VERSION_TAG in tags and ARCHIVED_TAG not in tags:
                live[tags[VERSION_TAG]] = raw
        return live

    def _aliases(self, model: dict[str, Any], live: dict[str, Raw]) -> dict[str, str]:
        names = {str(raw["version"]): name for name, raw in live.items()}
        pairs = ((a["alias"], str(a["version"])) for a in model.get("aliases") or [])
        return {alias: names[number] for alias, number in pairs if number in names}

    def _move_alias(self, alias: str, raw: Raw) -> None:
        body = {"name": self.model_name, "alias": alias, "version": str(raw["version"])}
        self.rest.post("registered-models/alias", body)

    def _write_history(self, alias: str, targets: builtins.list[str]) -> None:
        body = {"name": self.model_name, "key": HISTORY_TAG + alias, "value": json.dumps(targets)}
        self.rest.post("registered-models/set-tag", body)

    def _upload(self, model_dir: Path, version: str, digest: str, meta: dict[str, Any]) -> None:
        self._ensure_model()
        now = int(time.time() * 1000)
        run = self.rest.post(
            "runs/create",
            {"experiment_id": self._experiment_id(), "run_name": version, "start_time": now},
        )["run"]["info"]
        root = _proxy_path(run["artifact_uri"], f"run {run['run_id']}")
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
            self.rest.upload(f"{root}/model/{path.relative_to(model_dir).as_posix()}", path)
        tags = {VERSION_TAG: version, SHA256_TAG: digest, META_TAG: _meta_tag(meta)}
        self.rest.post(
            "model-versions/create",
            {
                "name": self.model_name,
                "source": f"{run['artifact_uri']}/model",
                "run_id": run["run_id"],
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        end = {"run_id": run["run_id"], "status": "FINISHED", "end_time": int(time.time() * 1000)}
        self.rest.post("runs/update", end)

    def _ensure_model(self) -> None:
        try:
            self.rest.post("registered-models/create", {"name": self.model_name})
        except MlflowApiError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _experiment_id(self) -> str:
        try:
            found = self.rest.get("experiments/get-by-name", experiment_name=self.experiment)
            return str(found["experiment"]["experiment_id"])
        except MlflowApiError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
        return str(self.rest.post("experiments/create", {"name": self.experiment})["experiment_id"])

    def _cached(self, raw: Raw) -> Path:
        """The checked local copy of `raw`'s files (serving/models/model_cache.py)."""
        tags = _tags(raw)
        version, digest = tags[VERSION_TAG], tags.get(SHA256_TAG)
        what = f"model version {version!r} ({self.location} version {raw['version']})"
        if digest is None:
            raise RegistryError(f"{what} has no {SHA256_TAG} tag: it was not added by clicktune")
        root = _proxy_path(raw["source"], what)
        return self.cache.checked(
            version, digest, lambda name, target: self.rest.download(f"{root}/{name}", target), what
        )


def _tags(raw: Raw) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in raw.get("tags") or []}


def _history(model: dict[str, Any], alias: str) -> builtins.list[str]:
    tags = {t["key"]: t.get("value", "") for t in model.get("tags") or []}
    return [str(v) for v in json.loads(tags.get(HISTORY_TAG + alias) or "[]")]


def _meta_tag(meta: dict[str, Any]) -> str:
    """What `list()` needs of `clicktune.json`; metrics left out if the tag would be too long
    (`get` reads them from the files)."""
    kept = {key: meta.get(key) for key in META_KEYS}
    text = json.dumps(kept, sort_keys=True)
    return text if len(text) <= MAX_TAG_CHARS else json.dumps({**kept, "metrics": {}})


def _proxy_path(uri: str, what: str) -> str:
    """The artifact proxy path of `mlflow-artifacts:[//host]/path`; other schemes are refused."""
    if not uri.startswith(PROXY_SCHEME):
        raise RegistryError(
            f"{what}: artifacts at {uri!r} are not behind the tracking server's artifact proxy; "
            "clicktune reads and writes them only through it: run the server with "
            "--serve-artifacts (the default) and --artifacts-destination <folder, s3://, gs://, "
            "wasbs://>"
        )
    rest = uri[len(PROXY_SCHEME) :]
    if rest.startswith("//"):  # mlflow-artifacts://host:port/path
        rest = rest[2:].partition("/")[2]
    return rest.strip("/")
