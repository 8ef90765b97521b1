"""bench/cpu.py's SharedMeter: the CPU of servers the topology shares (MariaDB, Kafka) per
order, and the machine's busy share during the load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import SharedMeter, cpu_seconds, machine_cpu, pids_named
from tests.support.waiting import wait_until


def test_pids_named_finds_a_process_by_its_command_name() -> None:
    with open(f"/proc/{os.getpid()}/comm") as f:
        comm = f.read().strip()
    assert os.getpid() in pids_named(comm)
    assert pids_named("no-such-process-xyz") == []


def test_machine_cpu_grows_and_busy_is_within_total() -> None:
    busy, total = machine_cpu()
    time.sleep(0.05)
    busy2, total2 = machine_cpu()
    assert total2 >= total and busy2 >= busy and busy <= total


def test_shared_meter_counts_a_named_process_and_adds_it_to_the_total(tmp_path: Path) -> None:
    spinner = tmp_path / "sharedspin"  # its own command name: no other process counts
    spinner.symlink_to(sys.executable)
    child = subprocess.Popen([str(spinner), "-c", "while 1: pass"])
    try:
        meter = SharedMeter({"spinner": "sharedspin"}).begin()
        # until it has spun 0.3 s of CPU, however busy the machine (a fixed sleep got it 50 ms)
        first = meter.start["spinner"]
        wait_until(lambda: (cpu_seconds(child.pid) or 0.0) >= first + 0.3, timeout=120.0,
                   message="the spinner's 0.3 s of CPU")
        meter.load_done()
        meter.end()
    finally:
        child.kill()
        child.wait()
    figures = meter.per_order(1000, services_total=100.0)
    spun = figures["CPU us/order spinner (shared)"]
    assert spun > 299.0  # at least 300 ms of CPU since begin() over 1,000 orders (tick floats)
    assert figures["CPU us/order total with shared"] == 100.0 + spun
    assert 0.0 < figures["machine CPU busy during load (%)"] <= 100.0
