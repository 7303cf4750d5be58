"""Chaos: the state folder's disk fills up; the byte limit evicts samples."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    INTERLOCK_BUDGET_MS,
    SOAK,
    account,
    expected_parts,
    opcua_live,
    record,
    soak,
    stack,
    trip_once,
    wait_all_delivered,
    wait_for,
    written_parts,
)
from peers import free_port

pytestmark = [pytest.mark.peer("mosquitto"), pytest.mark.timeout(soak(240, 1800))]


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``path`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full scenario mounts a tmpfs and needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_disk_full_keeps_interlocks_and_opcua_and_recovers(tmp_path: Path) -> None:
    """With the state folder's disk full (journal.max_mb above what the disk has), the
    interlocks still trip within budget and OPC-UA stays live, commits are retried, and
    once space returns every measurement reaches the MES exactly once."""
    with small_disk(tmp_path / "statefs", 8) as disk, stack(
        tmp_path, cmm={"part_interval_s": 0.25}, motors={}
    ) as st:
        cfg = st.gateway_config(state_dir=disk / "state", bulk=True,
                                journal={"max_mb": 64.0, "max_pending_points": 20_000})
        gw = st.make_gateway(cfg)
        gw.start()
        st.start_line()
        wait_for("first measurements at the MES", lambda: st.mes.count("measurement") > 0, 30,
                 logs=st.logs)
        filler = disk / "filler"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 1_500_000))  # leave ~1.5 MB to the journal
        st.mes.fault("refuse")
        st.drop_bulk(40_000)
        wait_for("the journal to hit the full disk",
                 lambda: gw.events("journal commit failed; keeping data in memory and retrying"),
                 30, logs=st.logs)
        full_for = soak(6.0, 30.0)
        t_full = time.monotonic()
        trips = trip_once(st)
        assert opcua_live(st.opcua_endpoint), "OPC-UA values froze with the disk full"
        time.sleep(max(0.0, full_for - (time.monotonic() - t_full)))
        assert gw.alive
        status = gw.status()
        pending = int(status["journal_pending_points"])
        shed_metric = gw.metric_sum("edge_journal_evicted_total", 'reason="memory"')
        filler.unlink()  # space returns
        st.mes.fault("ok")
        wait_for("commits to succeed again",
                 lambda: int(gw.status()["journal_pending_points"]) == 0, 30, logs=st.logs)
        trips = trip_once(st)
        st.parts["line"].stop()
        parts = expected_parts(st)
        wait_all_delivered(st, parts, 60)
        wait_for("every trip at the MES", lambda: st.mes.count("interlock_trip") >= trips, 30)
        failures = gw.events("journal commit failed; keeping data in memory and retrying")
        shed = gw.events("journal unwritable: dropped oldest pending samples")
        summary = account(
            st, "disk_full" + ("_soak" if SOAK else ""), parts, trips,
            note=f"commit_failures={len(failures)} pending_at_full={pending} "
                 f"shed_samples={sum(int(e.get('points', 0)) for e in shed)}",
        )
        record(summary)
        assert summary.lost == 0 and summary.duplicates == 0, summary.line()
        assert summary.worst_interlock_ms < INTERLOCK_BUDGET_MS, summary.line()
        assert shed_metric == sum(int(e.get("points", 0)) for e in shed)
        rc, took = gw.terminate()
        assert rc == 0 and took < 10


def test_byte_limit_evicts_samples_first_and_reports_it(tmp_path: Path) -> None:
    """With a small journal.max_mb and the MES down, samples are evicted oldest first,
    counted in edge_journal_evicted_total and logged; no record is evicted, and every
    measurement reaches the MES once it is back."""
    with stack(tmp_path, cmm={"part_interval_s": 0.25}, motors=None, etch=False,
               mqtt=False) as st:
        dead_influx = f"http://127.0.0.1:{free_port()}"  # keeps every sample undelivered
        gw = st.make_gateway(st.gateway_config(bulk=True, opcua=False, interlock=False,
                                               influx=dead_influx, journal={"max_mb": 1.0}))
        gw.start()
        st.start_line()
        st.mes.fault("refuse")
        dropped = sum(st.drop_bulk(20_000) for _ in range(soak(2, 8)))
        wait_for("the byte limit to evict samples",
                 lambda: gw.metric_sum("edge_journal_evicted_total", 'kind="samples"') > 0, 30,
                 logs=st.logs)
        wait_for("the bulk files to be read",
                 lambda: gw.metric_sum("edge_ingest_total", 'source="bulk"') >= dropped, 30,
                 logs=st.logs)
        # Eviction goes on while CMM samples keep arriving: the metric and the log are
        # read at two moments, so wait until a read of both agrees.
        def logged_matches_metric() -> bool:
            logged = gw.events("journal evicted data")
            metric = gw.metric_sum("edge_journal_evicted_total", 'kind="samples"')
            return bool(logged) and sum(int(e["samples"]) for e in logged) == metric

        wait_for("the eviction log to match the metric", logged_matches_metric, 30,
                 logs=st.logs)
        evicted = gw.metric_sum("edge_journal_evicted_total", 'kind="samples"')
        undelivered = gw.metric_sum("edge_journal_evicted_undelivered_total")
        records_evicted = gw.metric_sum("edge_journal_evicted_total", 'kind="records"')
        st.mes.fault("ok")
        wait_for("the CMM to write parts", lambda: len(written_parts(st)) >= 20, 30)
        st.parts["line"].stop()
        parts = expected_parts(st)
        wait_all_delivered(st, parts, 60)
        summary = account(st, "byte_limit" + ("_soak" if SOAK else ""), parts, 0,
                          note=f"evicted_samples={int(evicted)} undelivered={int(undelivered)} "
                               f"records_evicted={int(records_evicted)}")
        record(summary)
        assert evicted > 0 and records_evicted == 0
        assert summary.lost == 0 and summary.duplicates == 0, summary.line()
