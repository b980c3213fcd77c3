"""Errors of `clicktune services`; each message names the value at fault and what to do.

ServicesError
├── PrerequisiteError   Java >= 17 or Maven missing, too little disk or memory
├── PortTakenError      a configured port is used by a process that is not ours
├── FetchError          Maven could not download an artifact
├── InstallError        unpacking or installing a plugin failed
└── StartError          a server did not start or did not become healthy in time
"""

from __future__ import annotations

__all__ = [
    "FetchError",
    "InstallError",
    "PortTakenError",
    "PrerequisiteError",
    "ServicesError",
    "StartError",
]


class ServicesError(RuntimeError):
    """Base of every error `clicktune services` reports to the user."""


class PrerequisiteError(ServicesError):
    """A tool (Java, Maven) or a resource (disk, memory) the services need is missing."""


class PortTakenError(ServicesError):
    """A port the local services are configured to use is already taken by another process."""


class FetchError(ServicesError):
    """Maven failed to download an artifact from Maven Central."""


class InstallError(ServicesError):
    """Unpacking the distribution or installing a plugin failed."""


class StartError(ServicesError):
    """A server exited or did not become healthy before the start timeout."""
