"""Chaos: a hostile drop folder against the running daemon (issue 14 items 3 and 4)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest
from harness import Summary, record, soak, stack, wait_for

from hw_sim.cmm import CSV_HEADER

pytestmark = [pytest.mark.timeout(soak(240, 600))]

SHUTDOWN_S = 6.0
FEATURES = ("length_120", "width_80", "bore_50")
BIG_PARTS = 20_000


def rows(prefix: str, parts: int) -> list[str]:
    out = []
    for i in range(parts):
        for f in FEATURES:
            ts = f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
            out.append(f"{ts},{prefix}{i:06d},LOT1,{f},120.0,0.05,120.001,20.5,20.1,20.0")
    return out


def drop(folder: Path, name: str, body: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(body)
    os.replace(tmp, folder / name)


def test_hostile_drop_folder_the_daemon_keeps_measuring_and_stops_in_time(
        tmp_path: Path) -> None:
    """A FIFO, a symlink to /dev/urandom, an endless growing file, a file without a
    trailing newline and a file deleted mid-read in the drop folder: each hostile name is
    quarantined once with a reason, the unterminated last row is measured, the rows read
    before the deletion are kept in order, a normal file dropped after them all is
    measured, the source never restarts nor stalls, and SIGTERM ends the daemon within
    shutdown_timeout_s."""
    with stack(tmp_path, mqtt=False, etch=False) as st:
        cfg = st.gateway_config(sources=("cmm",), opcua=False, interlock=False,
                                shutdown_timeout_s=SHUTDOWN_S)
        cfg["sources"][0]["settle_s"] = 1.0
        gw = st.make_gateway(cfg)
        gw.start()
        folder = st.cmm_dir
        stop_growing = threading.Event()
        endless = folder / "endless.csv"

        def grow() -> None:
            with endless.open("ab") as fh:
                fh.write(CSV_HEADER.encode() + b"\n")
                for _ in range(400):  # 2.5 MB/s of blank lines, faster than they parse
                    if stop_growing.wait(0.4):
                        return
                    fh.write(b"\n" * (1 << 20))
                    fh.flush()

        writer = threading.Thread(target=grow, daemon=True)
        try:
            os.mkfifo(folder / "pipe.csv")
            (folder / "random.csv").symlink_to("/dev/urandom")
            writer.start()
            time.sleep(0.5)
            drop(folder, "big.csv", CSV_HEADER + "\n" + "\n".join(rows("B", BIG_PARTS)) + "\n")
            wait_for("the big file being read", lambda: gw.metric_sum(
                "edge_source_received_total", 'source="cmm1"') > 0, 30, logs=st.logs)
            (folder / "big.csv").unlink()
            drop(folder, "notail.csv",
                 CSV_HEADER + "\n" + "\n".join(rows("T", 1)))  # no newline at the end
            drop(folder, "normal.csv", CSV_HEADER + "\n" + "\n".join(rows("N", 3)) + "\n")

            def measured(prefix: str) -> list[str]:
                return sorted(r["part_id"] for r in st.mes.records("measurement")
                              if r["part_id"].startswith(prefix))

            wait_for("the normal file measured", lambda: len(measured("N")) == 9, 60,
                     logs=st.logs)
            wait_for("the unterminated last row measured", lambda: len(measured("T")) == 3,
                     30, logs=st.logs)
            assert writer.is_alive(), "the endless file stopped growing before the end"
            doc = gw.status()
            comp = doc["components"]["source:cmm1"]
            assert comp["running"] and comp["restarts"] == 0 and not comp["stuck"], comp
        finally:
            stop_growing.set()
            writer.join(10)
            with contextlib.suppress(OSError):  # releases a reader stuck in open()
                os.close(os.open(folder / "pipe.csv", os.O_WRONLY | os.O_NONBLOCK))

        big = measured("B")
        expected = sorted(p for p in {r.split(",")[1] for r in rows("B", BIG_PARTS)})
        kept_parts = sorted(set(big))
        # Read in order and cut by the deletion: what was read is a gap-free prefix.
        assert kept_parts and kept_parts == expected[: len(kept_parts)]
        def quarantined() -> list[dict[str, str]]:
            return [q for q in st.mes.records("quarantine") if q["source"] == "cmm1"]

        wait_for("both hostile names quarantined at the MES",
                 lambda: {q["where"] for q in quarantined()} >= {"pipe.csv", "random.csv"},
                 30, logs=st.logs)
        quarantines = quarantined()
        by_where: dict[str, list[str]] = {}
        for q in quarantines:
            by_where.setdefault(q["where"], []).append(q["reason"])
        assert len(by_where.get("pipe.csv", [])) == 1 and "FIFO" in by_where["pipe.csv"][0]
        assert len(by_where.get("random.csv", [])) == 1
        assert "symlink" in by_where["random.csv"][0]
        assert len(quarantines) == 2, by_where  # nothing else was spoiled
        assert gw.alive
        rc, took = gw.terminate(timeout=SHUTDOWN_S + 10)
        assert rc == 0, gw.tail()
        assert took < SHUTDOWN_S, f"exit took {took:.1f} s"
        record(Summary(
            "hostile_drop_folder", sent=9 + 3, delivered=len(measured("N"))
            + len(measured("T")), duplicates=0, lost=0, worst_interlock_ms=0.0,
            note=f"quarantines={len(quarantines)} big_rows_kept={len(big)}/{3 * BIG_PARTS}"
                 f" exit_s={took:.2f} endless_mb={endless.stat().st_size >> 20}"))
