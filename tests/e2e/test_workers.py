"""Many workers, many hosts: a scaled installation that loses a host in the middle of the work.

Two hosts (network namespaces, demo/hosts.py) each run a process worker (`python -m flows.worker`)
on the process work pool holding prefect.yaml's deployments; the Prefect server (locked with its
credential) and the case store are on PostgreSQL, and the hosts reach them, and the mail and chat
receivers, by their link's address, never 127.0.0.1 (demo/scaled.py). Cases are driven through
steps 1 to 3 by the scripted people; every process on host 0 is SIGKILLed while it executes step
runs; the monitoring sweep, run on the surviving host as its schedule would, repairs what the dead
host left behind.
Every case reaches plan implementation with nothing recorded or sent twice.

The issue's 30 cases, in the suite: the test starts first, on a worker of its own, while the other
worker takes the rest (tests/conftest.py orders the work; README.md, A scaled installation, has the
figures). REMEDY_TEST_WORKER_CASES sets another number. A case takes about a dozen flow runs
through step 3, each a fork on its host (flows/prefork.py): the waits grow with the cases.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.hosts import unavailable
from demo.scaled import Scaled, scaled_installation
from demo.workload import (
    Driving,
    active_step_runs,
    case_states,
    decisions_taken,
    doubles,
    emails_sent,
    load_directory,
    open_cases,
    start_cases,
    sweep_while,
)
from flows.local.credential import CLIENT_VARIABLE
from models.enums import CaseState
from tests.conftest import PG_URL, _clear_caches, require
from tests.e2e.helpers import wait_for

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.postgres, pytest.mark.longest]

CASES = int(os.environ.get("REMEDY_TEST_WORKER_CASES", "30"))
LIMIT = 4  # flow runs per worker at once


@pytest.fixture
def scaled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, session_key: str) -> Iterator[Scaled]:
    """A scaled installation with two empty hosts; this process talks to it as an operator."""
    require(PG_URL is not None, "REMEDY_TEST_POSTGRES_URL (server and case store on PostgreSQL)")
    assert PG_URL is not None
    reason = unavailable()
    require(reason is None, f"two hosts on one machine: {reason}")
    from prefect.settings import temporary_settings

    with scaled_installation(tmp_path, hosts=2, key=session_key, admin_url=PG_URL) as installed:
        for name, value in installed.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PREFECT_API_URL", installed.stack.api_url)
        assert installed.stack.auth_string
        monkeypatch.setenv(CLIENT_VARIABLE, installed.stack.auth_string)
        _clear_caches()
        with temporary_settings(installed.operator_settings()):
            load_directory()
            yield installed
        _clear_caches()


def test_two_hosts_one_killed_mid_run(scaled: Scaled) -> None:
    t0 = time.monotonic()
    first, second = scaled.hosts
    for host in (first, second):
        env = scaled.host_env(host)
        assert [name for name, value in env.items() if "127.0.0.1" in value] == []
        scaled.start_worker(host, limit=LIMIT)
    assert scaled.online_workers() == {"host-0", "host-1"}
    refs = open_cases(CASES, "hosts")
    started = time.monotonic()
    start_cases(refs)
    driving = Driving(refs, until=CaseState.IMPLEMENTING, timeout=600 + 60 * CASES).start()
    try:
        # once the work is well under way, host 0 dies while it executes step runs
        wait_for(lambda: decisions_taken(refs) >= CASES, 200 + 30 * CASES, "the first decisions")
        wait_for(lambda: first.flow_processes(), 120, "host 0 to execute a flow run")
        in_flight = len(first.flow_processes())
        killed_at = time.monotonic()
        scaled.kill_host(first)
        assert scaled.hosts[0].pids() == []

        # the sweep repairs what it left (hourly by schedule; here once the doctor lists it)
        sweeps = sweep_while(lambda: not driving.done())
        driving.wait()
    finally:
        driving.stop()
    driven = time.monotonic()
    wait_for(lambda: not active_step_runs(refs), 300, "step 4's runs to finish")

    states = case_states(refs)
    sent = emails_sent(refs)
    received = Counter(str(m["X-Remedy-Key"]) for m in scaled.mail.messages)
    repeats = {k: n for k, n in received.items() if n > 1}
    submitted = {
        h.number: scaled.log(f"host-{h.number}")
        .read_text(errors="replace")
        .count("submitting flow run")
        for h in (first, second)
    }
    print(
        f"\n{CASES} cases through steps 1-3 on two hosts (workers up in {started - t0:.0f} s); "
        f"host 0 killed after {killed_at - started:.0f} s with {in_flight} flow process(es); "
        f"all driven after {driven - started:.0f} s, {len(sweeps)} sweep(s) run; "
        f"flow runs per host {submitted}; people retried {dict(driving.retries)}; "
        f"{sum(received.values())} e-mails received for {sent} delivered"
    )
    assert set(states.values()) == {CaseState.IMPLEMENTING}, states
    assert doubles(refs) == []
    # a message whose sender died between the SMTP answer and recording it goes again, once
    assert sum(repeats.values()) - len(repeats) <= in_flight, repeats
    assert sent <= len(received), (sent, len(received))
    assert set(sweeps) <= {"Completed"}, sweeps
    assert all(submitted.values()), submitted  # both hosts executed flow runs
    # the runs are forks of the worker's fork server, not fresh interpreters (flows/prefork.py)
    assert scaled.log("host-1").read_text(errors="replace").count(", forked") > 0
