"""A forked helper child lets go of its parent's listening sockets and instance locks, and the
parent keeps both; it asks the kernel to kill it with its parent.

Why: a slice child outliving a SIGKILLed engine kept the dead engine's port accepting
connections nobody served (gateways waited instead of failing over) and its locks held (the
restart was refused until the child finished).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from exchange_server.embedded import DataDirLocked, lock_data_dir
from exchange_server.process.inherited import (
    die_with_parent,
    prepare_die_with_parent,
    release_in_child,
)

PR_GET_PDEATHSIG = 2


def in_child(check: Callable[[], bool]) -> bool:
    """``check()`` run in a forked child (what it changes in its process stays there)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer, then exit without any cleanup
        code = 0
        try:
            os.close(read)
            os.write(write, b"1" if check() else b"0")
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        answer = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer == b"1"


def port_listens_in_child(port: int) -> bool:
    """Whether a forked child still holds a socket listening on ``port`` after
    release_in_child (the parent holds one)."""
    def check() -> bool:
        release_in_child()
        for fd in {int(n) for n in os.listdir("/proc/self/fd")}:
            try:
                probe = socket.socket(fileno=os.dup(fd))
            except OSError:
                continue
            try:
                if (probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                        and probe.getsockname()[1] == port):
                    return True
            except OSError:
                pass
            finally:
                probe.close()
        return False

    return in_child(check)


def test_a_forked_child_releases_ports_and_locks(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    data = tmp_path / "data"
    lock = lock_data_dir(data)
    try:
        assert not port_listens_in_child(port)
        # the parent still has both: the port accepts, the lock is still taken
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass
        try:
            lock_data_dir(data)
            raise AssertionError("the data directory lock was released")
        except DataDirLocked:
            pass
    finally:
        lock.close()
        server.close()


def test_a_child_that_outlives_its_parent_holds_no_lock(tmp_path: Path) -> None:
    """The lock is free as soon as the parent is gone, though its forked child lives on."""
    data = tmp_path / "data"
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    parent = os.fork()
    if parent == 0:  # an "engine": takes the lock, forks a helper child, then dies
        code = 0
        try:
            lock_data_dir(data)
            if os.fork() == 0:  # the helper child: releases, then lives until told
                release_in_child()
                os.write(ready_w, b"r")
                os.read(done_r, 1)
                os._exit(0)
        except BaseException:
            code = 1
        finally:
            os._exit(code)  # the "engine" dies; its helper child lives on
    os.close(ready_w)  # only the helper child writes it: EOF (b"") if it failed
    os.close(done_r)
    try:
        assert os.read(ready_r, 1) == b"r", "the helper child failed before it was ready"
        os.waitpid(parent, 0)
        handle = open(data / "exchange-server.lock", "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the child held it
        finally:
            handle.close()
    finally:
        os.write(done_w, b"d")
        os.close(done_w)
        os.close(ready_r)


def death_signal() -> int:
    """This process's parent-death signal as the kernel holds it (prctl PR_GET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(-1)
    assert libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) == 0
    return value.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_helper_child_asks_to_die_with_its_parent() -> None:
    parent = os.getpid()
    prepare_die_with_parent()  # as the service does before its fork
    assert in_child(lambda: death_signal() == 0)  # nothing asked: a forked child has none
    assert in_child(lambda: die_with_parent(parent) and death_signal() == signal.SIGKILL)


def test_a_child_whose_parent_is_gone_is_told() -> None:
    """The parent died before the child asked (its pid is then the reaper's): the kernel
    would never signal it, so the answer must say so."""
    assert not in_child(lambda: die_with_parent(os.getpid() + 1_000_000))
