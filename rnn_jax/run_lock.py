"""One writer per run folder: a process that trains into a folder holds an exclusive lock on its
`writer.lock` until it exits. A second process (a requeued job beside a manual --resume, a
duplicated array task) is refused with the holder's host, pid and start time, instead of both
writing the same checkpoints, logs and results. The lock is the OS's (`fcntl.flock`), released
when its process ends however it ends, so a folder left by a killed job is free at once; the
file's text only names the holder. Linux and macOS; on a cluster's shared file system flock
needs NFSv4 or Lustre's flock mount option (their default on most clusters)."""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

LOCK_NAME = "writer.lock"
_HELD: dict[Path, int] = {}  # folder -> the open descriptor that holds its lock, for the process's life


def hold(folder: Path) -> None:
    """Make this process the one writer of `folder` (made if missing) until `release_all` or its
    exit; a ValueError naming the holder where another process has it."""
    folder = Path(folder).resolve()
    if folder in _HELD:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace")
        os.close(fd)
        raise ValueError(f"{folder} is being written by another process ({_describe(holder)}); a run folder has "
                         "one writer: wait for it to finish or stop it, then resume") from None  # fmt: skip
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": datetime.datetime.now().isoformat("T", "seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    _HELD[folder] = fd


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"host {holder['host']}, pid {holder['pid']}, since {holder['since']}"
    except (ValueError, KeyError):
        return "its lock file names no holder yet"


def live_holder(folder: Path) -> dict | None:
    """{host, pid, since} of the process on this host that `folder`'s writer.lock names, while
    it runs (None: no holder, another host's, or its process gone). Read without taking the
    lock: a probe that took it could refuse a writer starting at that moment."""
    try:
        holder = json.loads((Path(folder) / LOCK_NAME).read_text())
        pid = holder["pid"] if holder["host"] == socket.gethostname() else None
    except (OSError, ValueError, KeyError):  # no lock file, or it names no one (released)
        return None
    try:
        os.kill(pid, 0)  # signal 0: whether the process exists
    except (TypeError, ProcessLookupError):  # another host's, or gone
        return None
    except PermissionError:  # it runs, as another user
        pass
    return holder


def release_all() -> None:
    """Give up every folder this process holds (`experiments.cli` does after a run, so that the
    next command, in this process or another, may write them); the lock files then name no one."""
    while _HELD:
        fd = _HELD.popitem()[1]
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases its flock
