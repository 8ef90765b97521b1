"""Per-process CPU budget: microseconds of CPU per accepted order, for each process of a server.

Why: throughput alone does not say *which* process got slower; the CPU each process spends per
order does, and it is far steadier than orders/s on a shared machine.  Read from
``/proc/<pid>/stat`` (utime + stime) before and after a load, for a process and every
descendant alive at the first reading (the history follower is a child of the main process).
A process that exits during the load is reported with what it had used at its last reading.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing parenthesis
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list, /proc/<pid>/task/*/children)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


def role(pid: int) -> str:
    """A short name for a child of a service: what its command line says it is."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return f"pid {pid}"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "spawn_main" in cmdline or "forkserver" in cmdline:
        return "follower"  # the history follower: the only spawned child of the matching process
    return cmdline.split(" ")[0].rsplit("/", 1)[-1] or f"pid {pid}"


@dataclass
class CpuMeter:
    """Readings for named root processes and their descendants."""

    roots: dict[str, int]
    start: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def begin(self) -> CpuMeter:
        for name, pid in self.roots.items():
            self._track(pid, name)
            for child in descendants(pid):
                self._track(child, role(child) if name == "main" else f"{name}: {role(child)}")
        return self

    def _track(self, pid: int, name: str) -> None:
        seconds = cpu_seconds(pid)
        if seconds is not None:
            self.names[pid] = name
            self.start[pid] = self.last[pid] = seconds

    def end(self) -> CpuMeter:
        for pid in self.start:
            seconds = cpu_seconds(pid)
            if seconds is not None:
                self.last[pid] = seconds
        return self

    def per_order(self, orders: int) -> dict[str, float]:
        """``CPU us/order <name>`` -> microseconds of CPU per order, plus their total."""
        used: dict[str, float] = {}
        for pid, name in self.names.items():
            used[name] = used.get(name, 0.0) + self.last[pid] - self.start[pid]
        return budget(used.items(), orders)


def budget(used: Iterable[tuple[str, float]], orders: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    total = 0.0
    for name, seconds in used:
        if name.endswith("resource tracker"):
            continue
        total += seconds
        figures[f"CPU us/order {name}"] = seconds * 1e6 / max(orders, 1)
    figures["CPU us/order total"] = total * 1e6 / max(orders, 1)
    return figures


def settle(meter: CpuMeter, timeout: float = 60.0, idle: float = 0.03) -> None:
    """Read the CPU until the processes are idle (less than ``idle`` s of CPU in 0.5 s): the
    follower has drained its backlog.  Gives up after ``timeout`` seconds (a busy neighbour)."""
    deadline = time.monotonic() + timeout
    meter.end()
    while time.monotonic() < deadline:
        before = sum(meter.last.values())
        time.sleep(0.5)
        meter.end()
        if sum(meter.last.values()) - before < idle:
            return


def pids_named(name: str) -> list[int]:
    """Every process whose command name (``/proc/<pid>/comm``) is ``name``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat; idle and iowait are
    not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(t) for t in f.readline().split()[1:]]
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / _TICKS, total / _TICKS


@dataclass
class SharedMeter:
    """CPU of the servers a topology shares with whatever else runs (MariaDB, Kafka's JVM), and
    how busy the whole machine was during the load.  Why: the per-service budget leaves them
    out, yet on the 2-core machine they took about a third of the topology's CPU per order
    (bench/README.md, "where requests wait"), and a machine busy near 100% says the throughput
    was bound by CPU, not by waiting.  Other jobs' use of the same servers counts too, hence
    "shared"."""

    names: dict[str, str]  # label -> process command name
    start: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    machine: tuple[float, float] = (0.0, 0.0)
    busy: float = 0.0

    def _read(self) -> dict[str, float]:
        return {label: sum(cpu_seconds(pid) or 0.0 for pid in pids_named(comm))
                for label, comm in self.names.items()}

    def begin(self) -> SharedMeter:
        self.start = self.last = self._read()
        self.machine = machine_cpu()
        return self

    def load_done(self) -> None:
        """The load ended: the machine's busy share (%) since ``begin``."""
        busy, total = machine_cpu()
        spent = total - self.machine[1]
        # busy <= total in /proc/stat's ticks; the seconds' float division may overshoot 100
        self.busy = min(100.0, 100.0 * (busy - self.machine[0]) / spent) if spent else 0.0

    def end(self) -> None:
        self.last = self._read()

    def per_order(self, orders: int, services_total: float) -> dict[str, float]:
        """``CPU us/order <label> (shared)``, the services' total with them, the machine's
        busy share."""
        figures = {f"CPU us/order {label} (shared)": (self.last[label] - self.start[label])
                   * 1e6 / max(orders, 1) for label in self.names}
        figures["CPU us/order total with shared"] = services_total + sum(figures.values())
        figures["machine CPU busy during load (%)"] = self.busy
        return figures
