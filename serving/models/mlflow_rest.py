"""The few MLflow tracking-server REST calls the registry makes, over httpx (no mlflow import).

Serving must run without the mlflow package (and its dependencies), so the registry speaks the
server's REST API directly: `/api/2.0/mlflow/...` for registered models, model versions, aliases,
tags, experiments and runs, and the artifact proxy `/api/2.0/mlflow-artifacts/artifacts/<path>`
for files (the server stores them in its `--artifacts-destination`: a folder, S3, GCS, Azure).

A call that cannot reach the server (refused, timed out, 429 or 5xx) is retried `retries` times
with capped exponential backoff, then raises `RegistryUnavailableError` naming the URL, the call
and the attempts; an answered error raises `MlflowApiError` with MLflow's `error_code`.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from serving.errors import MlflowApiError, RegistryUnavailableError

__all__ = ["MlflowRest"]

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1024 * 1024


class MlflowRest:
    """JSON calls and artifact transfers against the tracking server at `url`."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        max_backoff_s: float = 2.0,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self._timeout_s, self._transport = timeout_s, transport
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = self._client()

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=self._timeout_s,
            headers=self._headers,
            transport=self._transport,
        )

    def __getstate__(self) -> dict[str, Any]:
        # A registry travels to Ray actors with the encoder factory: send the settings, and
        # let each process open its own connection pool.
        return {k: v for k, v in self.__dict__.items() if k != "_http"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._http = self._client()

    def get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """`GET /api/2.0/mlflow/<endpoint>?params` -> the JSON answer."""
        return self._json("GET", f"{API}/{endpoint}", params=params)

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /api/2.0/mlflow/<endpoint>` with a JSON body -> the JSON answer."""
        return self._json("POST", f"{API}/{endpoint}", json=body)

    def delete(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("DELETE", f"{API}/{endpoint}", json=body)

    def upload(self, path: str, source: Path) -> None:
        """Put the file `source` at artifact `path` through the server's artifact proxy."""

        def send() -> httpx.Response:
            with source.open("rb") as body:
                return self._http.put(_artifact(path), content=body)

        self._answer("PUT", _artifact(path), send)

    def download(self, path: str, target: Path) -> str:
        """Stream artifact `path` into the file `target`; return the sha256 of what was written."""
        digest = hashlib.sha256()

        def fetch() -> httpx.Response:
            nonlocal digest
            digest = hashlib.sha256()  # a retried transfer starts the file again
            with self._http.stream("GET", _artifact(path)) as response:
                if response.status_code != 200:
                    response.read()
                    return response
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            return response

        self._answer("GET", _artifact(path), fetch)
        return digest.hexdigest()

    def close(self) -> None:
        self._http.close()

    def _json(self, method: str, route: str, **kwargs: Any) -> dict[str, Any]:
        response = self._answer(method, route, lambda: self._http.request(method, route, **kwargs))
        return dict(response.json()) if response.content else {}

    def _answer(self, method: str, route: str, send: Any) -> httpx.Response:
        """`send()` until the server answers something other than a transient failure."""
        started, failure = time.monotonic(), ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            try:
                response: httpx.Response = send()
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                failure = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise _api_error(method, self.url + route, response)
            return response
        spent = time.monotonic() - started
        raise RegistryUnavailableError(
            f"MLflow tracking server at {self.url} did not answer {method} {route} "
            f"({self.retries + 1} attempts over {spent:.1f} s, last: {failure}); check that it "
            "runs (`clicktune services up` for the local one) and registry.mlflow_url"
        )


def _artifact(path: str) -> str:
    return f"{ARTIFACTS}/{quote(path.strip('/'))}"


def _api_error(method: str, url: str, response: httpx.Response) -> MlflowApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = str(body.get("error_code") or f"HTTP_{response.status_code}")
    message = str(body.get("message") or response.text[:200])
    return MlflowApiError(f"MLflow {method} {url} refused: {code}: {message}", code)
