"""The Ray engine of a reindex (`clicktune reindex --engine ray`): point-in-time slices copied by
an actor pool. Only the copy changes; `Reindexer` keeps the rest (the target index, `docs_next`
and its dual writes, reconcile, the atomic alias swap, retention):

    driver (Reindexer + RayCopier)                  actor i (SliceWorker, 1 CPU or 1 GPU)
    open a point in time on the source   ------->   read slice k after its saved _id (PIT
    hand out slices k = 0 .. actors x N-1           search_after), embed with the ONNX encoder,
    save each page's _id per slice   <--- page ---  create-write the page (bulk), yield it
    a dead actor: Ray restarts it, the slice goes back on the queue from its saved page

The actors build their own OpenSearch client and encoder from picklable factories
(`make_client`, `make_encoder`), so a model directory and the settings travel, never a live
client or session. Ray is imported only here and in serving/index/ray_cluster.py.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from types import ModuleType
from typing import Any

from tqdm import tqdm

from serving.config import IndexSettings, RayGpus, RaySettings
from serving.encoders.encoder import Encoder
from serving.encoders.encoder_pair import document_encoder
from serving.errors import RayClusterError
from serving.index.doc_images import ImageReader, embed_documents
from serving.index.reindex_checkpoints import Checkpoint, Checkpoints
from serving.index.reindex_pages import close_pit, create_documents, open_pit, read_pages
from serving.index.reindex_slices import (
    PageDone,
    SliceLedger,
    SliceRun,
    SliceState,
    run_slices,
    slice_states,
)

__all__ = ["RayCopier", "SliceWorker", "actor_name"]

log = logging.getLogger(__name__)


class SliceWorker:
    """Copies slices of a point in time page by page: read, embed, create-write, with the write
    of one page overlapping the reading and embedding of the next. A Ray actor in the pool; a
    plain class, so it also runs without Ray."""

    def __init__(
        self,
        make_client: Callable[[], Any],
        make_encoder: Callable[[], Encoder],
        settings: IndexSettings,
        batch_size: int,
    ) -> None:
        self._client = make_client()
        self._encoder = document_encoder(make_encoder())
        self._settings = settings
        # documents already in the index: local paths there were written by a trusted index run
        self._images = ImageReader(settings.images, local_paths=True)
        self._batch_size = batch_size

    def ready(self) -> str:
        """Where this worker runs (host:pid), once its client and model are loaded."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def copy_slice(
        self, pit_id: str, source: str, target: str, state: SliceState
    ) -> Iterator[PageDone]:
        """The pages of slice `state` after its saved `_id`, each yielded once written."""
        field = self._settings.vector_field
        part = (state.id, state.max)
        pages = read_pages(self._client, pit_id, source, field, self._batch_size, state.after, part)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slice-writer") as writer:
            pending: Future[PageDone] | None = None
            for docs, last in pages:
                vectors = embed_documents(self._encoder, docs, self._settings, self._images)
                if pending is not None:
                    yield pending.result()
                pending = writer.submit(self._write, target, docs, vectors, last)
            if pending is not None:
                yield pending.result()

    def _write(self, target: str, docs: list[dict], vectors: Any, last: list[Any]) -> PageDone:
        field = self._settings.vector_field
        existing = create_documents(self._client, target, docs, vectors, field)
        return PageDone(after=last, docs=len(docs), existing=existing)


def actor_name(target: str, worker: int) -> str:
    """The Ray name of actor `worker` of the reindex into `target` (for `ray.get_actor`)."""
    return f"clicktune-reindex-{target}-{worker}"


class RayCopier:
    """Copies a reindex's documents with `settings.actors` `SliceWorker` actors on the Ray
    cluster `ray` is connected to (serving/index/ray_cluster.py), `slices_per_actor` slices each."""

    def __init__(
        self,
        ray: ModuleType,
        client: Any,
        make_client: Callable[[], Any],
        make_encoder: Callable[[], Encoder],
        index_settings: IndexSettings,
        settings: RaySettings,
        *,
        batch_size: int = 256,
        progress: bool = True,
    ) -> None:
        self._ray, self._client = ray, client
        self._make_client, self._make_encoder = make_client, make_encoder
        self.index_settings, self.settings = index_settings, settings
        self.batch_size = batch_size
        self.progress = progress
        self.last_run: SliceRun | None = None  # slices copied and resumed by the last copy
        self.startup_s = 0.0  # the last copy's wait for its actors (placing, loading models)

    def copy(self, checkpoint: Checkpoint, store: Checkpoints) -> None:
        """Start the pool, copy every unfinished slice of `checkpoint` (saving it through
        `store` after each page), then stop the pool and close the point in time."""
        s = self.settings
        states = slice_states(checkpoint, s.actors * s.slices_per_actor)
        started = time.perf_counter()
        actors = self._start_actors(checkpoint.target)
        self.startup_s = time.perf_counter() - started
        try:
            pit_id = open_pit(self._client, checkpoint.source)
        except BaseException:
            self._kill(actors)
            raise
        bar = tqdm(
            total=checkpoint.total,
            initial=checkpoint.written,
            unit="docs",
            desc=f"{checkpoint.target} ({len(actors)} actors)",
            disable=not self.progress,
        )
        ledger = SliceLedger(checkpoint, store, states, on_page=bar.update)
        try:
            self.last_run = run_slices(
                ledger,
                len(actors),
                partial(self._copy_slice, actors, pit_id, checkpoint),
                retries=s.slice_retries,
                retry_on=(self._ray.exceptions.RayError,),
            )
        finally:
            bar.close()
            self._kill(actors)
            close_pit(self._client, pit_id, checkpoint.source)
        log.info("ray reindex into %s: %s", checkpoint.target, self.last_run)

    def _copy_slice(
        self, actors: list[Any], pit_id: str, checkpoint: Checkpoint, worker: int, state: SliceState
    ) -> Iterator[PageDone]:
        """The pages actor `worker` writes of slice `state`, as they land."""
        self._await_ready(actors[worker])  # a restarted actor reloads its model first
        call = actors[worker].copy_slice.options(num_returns="streaming")
        for ref in call.remote(pit_id, checkpoint.source, checkpoint.target, state):
            yield self._ray.get(ref)

    def _start_actors(self, target: str) -> list[Any]:
        """The pool, each actor with its client and model loaded; `RayClusterError` when the
        cluster cannot place them in time or an actor cannot start."""
        ray, s = self._ray, self.settings
        gpus = self._gpus_per_actor()
        worker = ray.remote(SliceWorker)
        actors = [
            worker.options(
                name=actor_name(target, i),
                num_cpus=s.cpus_per_actor,
                num_gpus=gpus,
                max_restarts=s.slice_retries,
                max_task_retries=0,  # the driver resumes the slice from its checkpoint instead
            ).remote(self._make_client, self._make_encoder, self.index_settings, self.batch_size)
            for i in range(s.actors)
        ]
        try:
            where = ray.get([a.ready.remote() for a in actors], timeout=s.actors_ready_timeout_s)
        except ray.exceptions.GetTimeoutError as exc:
            self._kill(actors)
            raise RayClusterError(
                f"{s.actors} reindex actors of {s.cpus_per_actor:g} CPU and {gpus:g} GPU each "
                f"did not start within {s.actors_ready_timeout_s:g} s; the cluster has "
                f"{ray.cluster_resources()} (fewer --actors, or serving.reindex.ray.cpus_per_actor)"
            ) from exc
        except ray.exceptions.RayError as exc:
            self._kill(actors)
            raise RayClusterError(f"a reindex actor could not start: {exc}") from exc
        log.info("reindex actors on %s (%g GPU each)", where, gpus)
        return actors

    def _await_ready(self, actor: Any) -> None:
        """Wait (at most `actors_ready_timeout_s`) while Ray restarts `actor`, instead of
        spending a slice's retries on calls to an actor that is coming back."""
        ready = actor.ready.options(max_task_retries=-1).remote()
        self._ray.get(ready, timeout=self.settings.actors_ready_timeout_s)

    def _gpus_per_actor(self) -> float:
        """1 each with `always`; with `auto`, the cluster's GPUs shared by the actors (one each
        when there are enough), none on a cluster without GPUs."""
        if self.settings.gpus is RayGpus.never:
            return 0.0
        if self.settings.gpus is RayGpus.always:
            return 1.0
        gpus = float(self._ray.cluster_resources().get("GPU", 0))
        return min(1.0, gpus / self.settings.actors) if gpus >= 1 else 0.0

    def _kill(self, actors: list[Any]) -> None:
        for actor in actors:
            self._ray.kill(actor)
