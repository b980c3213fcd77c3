"""A lease in OpenSearch: one tuner worker runs tasks, any other stands by.

The lease is one document (`<tasks index>-lease`, id = the lease name) holding its owner and
expiry. A worker takes it when it is missing, expired or already its own, always with
`if_seq_no`/`if_primary_term`, so of two workers racing for an expired lease exactly one wins.
The holder renews it from a heartbeat thread; a worker killed with -9 stops renewing and a
standby takes over once `lease_s` has passed. Expiry uses the workers' clocks: keep them in
sync (NTP) when workers run on several machines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError, NotFoundError, OpenSearchException

from serving.tasks import TaskError

__all__ = ["Heartbeat", "Lease"]

log = logging.getLogger(__name__)


class Lease:
    """The worker lease `name`, held by `owner` for `lease_s` after each renewal."""

    def __init__(
        self,
        client: OpenSearch,
        index: str,
        owner: str,
        lease_s: float,
        name: str = "tuner-worker",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.index, self.owner = client, index, owner
        self.lease_s, self.name, self.clock = lease_s, name, clock

    def holder(self) -> dict[str, Any] | None:
        """The lease document (`owner`, `expires_at`), None when nobody ever took it."""
        found = self._get()
        return found[0] if found else None

    def acquire(self) -> bool:
        """Take or renew the lease; False while another live worker holds it."""
        found = self._get()
        body = {"owner": self.owner, "expires_at": self.clock() + self.lease_s}
        try:
            if found is None:
                self.client.index(
                    index=self.index, id=self.name, body=body, params={"op_type": "create"}
                )
                return True
            current, seq = found
            if current["owner"] != self.owner and current["expires_at"] > self.clock():
                return False
            self.client.index(
                index=self.index,
                id=self.name,
                body=body,
                params={"if_seq_no": seq[0], "if_primary_term": seq[1]},
            )
        except ConflictError:
            return False  # another worker took or renewed it between our read and write
        except OpenSearchException as exc:
            raise TaskError(f"cannot write lease {self.name!r} in {self.index!r}: {exc}") from exc
        if found is None or found[0]["owner"] != self.owner:
            log.info("lease %r taken by %s (was %s)", self.name, self.owner, found and found[0])
        return True

    def renew(self) -> bool:
        """Extend the lease if this worker still holds it."""
        found = self._get()
        if found is None or found[0]["owner"] != self.owner:
            return False
        return self.acquire()

    def release(self) -> None:
        """Give the lease up now (a clean exit), so a standby need not wait for the expiry."""
        found = self._get()
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


class Heartbeat:
    """Renews `lease` every `lease_s / 3` in a daemon thread; `lost` is set when it cannot."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

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
                log.warning("lease renewal failed: %s", exc)
                continue  # OpenSearch blip: try again before the lease runs out
            if not held:
                log.error("lease %r lost to another worker; stopping", self.lease.name)
                self.lost.set()
                return
