"""Running OpenSearch as an unprivileged user when clicktune itself runs as root."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

from clicktune.services.errors import StartError


def run_as_prefix(user: str, folder: Path) -> list[str]:
    """The command prefix that runs a process as `user` when we are root ([] otherwise).

    As root this also creates `user` (a system account without home or shell), gives it
    `folder`, and makes every parent of `folder` traversable so it can reach its files.
    """
    if os.geteuid() != 0:
        return []
    ensure_user(user)
    _run(["chown", "-R", f"{user}:", str(folder)], f"give {folder} to {user}")
    make_traversable(folder)
    return ["runuser", "-u", user, "--"]


def ensure_user(user: str) -> None:
    """Create the system user `user` unless it exists."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        _run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", user], f"create user {user!r}")


def make_traversable(folder: Path) -> None:
    """Add o+x to `folder`'s parents that lack it, so another user can reach `folder`."""
    for parent in folder.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StartError(
            f"could not {what} (services.run_as_user; OpenSearch refuses to run as root): "
            f"{' '.join(command)} said {done.stderr.strip() or done.returncode}"
        )
