"""A lease in OpenSearch: one tuner worker runs tasks, any other stands by; a fence stops a
worker that may have lost it.

The lease is one document (`<tasks index>-lease`, id = the lease name) holding its owner, its
expiry and a fencing `token`. A worker takes it when it is missing, expired or already its own,
always with `if_seq_no`/`if_primary_term`, so of two workers racing for an expired lease exactly
one wins. The token goes up by one every time the lease is taken anew (a new owner, or an expired
lease taken back); a renewal keeps it. The holder renews it from a heartbeat thread; a worker
killed with -9 stops renewing and a standby takes over once `lease_s` has passed. Expiry uses
the workers' clocks: keep them in sync (NTP) when workers run on several machines.

A worker that was paused (SIGSTOP, a long GC, a frozen VM) may wake up after a standby took
over without having heard of it. So the holder also keeps the monotonic time of its last
successful renewal, and its `Fence` counts the lease as lost once `lease_s` passed since then,
whatever the lease document says. The runner calls `Fence.check` before every side effect
(batch release, registration, alias moves, experiment start, promotion, cleanup); it raises
`LeaseLostError` when the lease is lost, expired locally, or carries another owner or token.
A pause between a check and the side effect it guards is not covered: the stores written to
(the model registry's files, aliases) cannot check a token themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError, NotFoundError, OpenSearchException

from serving.state.tasks import TaskError

__all__ = ["NO_FENCE", "Fence", "Heartbeat", "Lease", "LeaseLostError"]

log = logging.getLogger(__name__)


class LeaseLostError(TaskError):
    """Another worker holds the lease now (or may): this one stops without touching the task."""


class Lease:
    """The worker lease `name`, held by `owner` for `lease_s` after each renewal.

    `clock` is the wall clock written into the document (expiry, shared between workers);
    `monotonic` times this holder's own renewals (immune to clock steps)."""

    def __init__(
        self,
        client: OpenSearch,
        index: str,
        owner: str,
        lease_s: float,
        name: str = "tuner-worker",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.index, self.owner = client, index, owner
        self.lease_s, self.name, self.clock, self.monotonic = lease_s, name, clock, monotonic
        self.token: int | None = None  # the fencing token of this holder's current tenure
        self.renewed_at: float | None = None  # monotonic time the last acquire/renew started

    def holder(self) -> dict[str, Any] | None:
        """The lease document (`owner`, `expires_at`, `token`), None when nobody ever took it."""
        found = self._get()
        return found[0] if found else None

    def acquire(self) -> bool:
        """Take or renew the lease; False while another live worker holds it."""
        started = self.monotonic()  # counted from before the write: never later than the expiry
        found = self._get()
        now = self.clock()
        if found is not None:
            current = found[0]
            if current["owner"] != self.owner and current["expires_at"] > now:
                return False
        token = _next_token(found, self.owner, now)
        body = {"owner": self.owner, "expires_at": now + self.lease_s, "token": token}
        try:
            if found is None:
                params: dict[str, Any] = {"op_type": "create"}
            else:
                params = {"if_seq_no": found[1][0], "if_primary_term": found[1][1]}
            self.client.index(index=self.index, id=self.name, body=body, params=params)
        except ConflictError:
            return False  # another worker took or renewed it between our read and write
        except OpenSearchException as exc:
            raise TaskError(f"cannot write lease {self.name!r} in {self.index!r}: {exc}") from exc
        if token != self.token:
            log.info(
                "lease %r taken by %s with token %d (was %s)",
                self.name,
                self.owner,
                token,
                found and found[0],
            )
        self.token, self.renewed_at = token, started
        return True

    def renew(self) -> bool:
        """Extend the lease if this worker still holds it under the same token."""
        found = self._get()
        if found is None or found[0]["owner"] != self.owner or found[0].get("token") != self.token:
            return False
        return self.acquire()

    def expired_locally(self) -> bool:
        """Whether `lease_s` passed (monotonic clock) since this holder's last renewal."""
        return self.renewed_at is None or self.monotonic() - self.renewed_at >= self.lease_s

    def fence(self) -> Fence:
        """A fence for the tenure this worker holds now (call right after `acquire`)."""
        if self.token is None:
            raise LeaseLostError(f"lease {self.name!r} is not held by {self.owner}")
        return Fence(self, self.token)

    def release(self) -> None:
        """Give the lease up now (a clean exit), so a standby need not wait for the expiry."""
        found = self._get()
        self.token, self.renewed_at = None, None
        if found is None or found[0]["owner"] != self.owner:
            return
        try:
            self.client.delete(
                index=self.index,
                id=self.name,
                params={"if_seq_no": found[1][0], "if_primary_term": found[1][1]},
            )
        except (ConflictError, NotFoundError):
            pass
        except OpenSearchException as exc:
            log.warning("could not release lease %r: %s", self.name, exc)

    def _get(self) -> tuple[dict[str, Any], tuple[int, int]] | None:
        try:
            found = self.client.get(index=self.index, id=self.name)
        except NotFoundError:
            return None
        except OpenSearchException as exc:
            raise TaskError(f"cannot read lease {self.name!r} in {self.index!r}: {exc}") from exc
        return found["_source"], (found["_seq_no"], found["_primary_term"])


def _next_token(found: tuple[dict[str, Any], Any] | None, owner: str, now: float) -> int:
    """The same token for a renewal of a live lease of `owner`, the next one otherwise."""
    if found is None:
        return 1
    current = found[0]
    token = int(current.get("token", 0))
    renewal = current["owner"] == owner and current["expires_at"] > now
    return token if renewal else token + 1


class Fence:
    """One tenure of the lease: `check()` before a side effect raises `LeaseLostError` once the
    lease is lost, locally expired, or holds another owner or token."""

    def __init__(self, lease: Lease, token: int) -> None:
        self.lease, self.token = lease, token
        self.lost = threading.Event()  # set by the heartbeat when a renewal finds another owner

    def check(self, action: str) -> None:
        """Raise `LeaseLostError` unless this worker still holds the lease for `action`."""
        why = self._local_reason()
        if why is None:
            held = self.lease.holder()
            if held is None or held["owner"] != self.lease.owner:
                why = f"the lease is held by {held and held['owner']}"
            elif held.get("token") != self.token:
                why = f"the lease was taken anew (token {held.get('token')}, ours {self.token})"
        if why is not None:
            self.lost.set()
            raise LeaseLostError(f"not {action}: {why}")

    def is_lost(self) -> bool:
        """The local part of `check` (no request): lost, expired or renewed under another token."""
        return self._local_reason() is not None

    def _local_reason(self) -> str | None:
        lease = self.lease
        if self.lost.is_set():
            return "the lease was lost to another worker"
        if lease.token != self.token:
            return f"the lease was taken anew (token {lease.token}, ours {self.token})"
        if lease.expired_locally():
            return f"no successful renewal for lease_s={lease.lease_s:g} s"
        return None


class _NoFence(Fence):
    """Never trips: one-off runs without a lease (tests, `clicktune train`)."""

    def __init__(self) -> None:
        self.lost = threading.Event()

    def check(self, action: str) -> None:
        return None

    def is_lost(self) -> bool:
        return False


NO_FENCE: Fence = _NoFence()


class Heartbeat:
    """Renews the lease of `fence` every `lease_s / 3` in a daemon thread; sets `fence.lost`
    when another worker holds it."""

    def __init__(self, fence: Fence) -> None:
        self.fence, self.lease = fence, fence.lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    @property
    def lost(self) -> threading.Event:
        return self.fence.lost

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease.lease_s / 3):
            try:
                held = self.lease.renew()
            except TaskError as exc:
                # An OpenSearch blip: try again; the fence trips by itself after lease_s.
                log.warning("lease renewal failed: %s", exc)
                continue
            if not held:
                log.error("lease %r lost to another worker; stopping", self.lease.name)
                self.fence.lost.set()
                return
