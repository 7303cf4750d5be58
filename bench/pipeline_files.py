"""Load generator for bench/pipeline.py: CSV drops (bulk samples and CMM rows).

Once a second it drops (write to ``*.tmp``, then rename) one samples CSV into
``--bulk-dir`` (columns ``ts`` in ns, ``a``, ``b``, ``c``: three samples per row) and one
CMM CSV into ``--cmm-dir`` (the hw_sim CMM header; every row is one CmmReading, which
the gateway turns into a Measurement record for the MES and an L20 sample). Rates come
from ``--rate-file`` (JSON ``{"bulk": samples/s, "cmm": rows/s}``), re-read every drop.
Files older than ``--keep-s`` are deleted (a plant's CMM PC rotates its folder too).
On SIGTERM it writes ``{"bulk_sent": samples, "cmm_sent": rows, ...}`` to ``--out``
(rewritten after every drop as well, with ``idle`` true when that drop was empty:
its counts are then final until the rates change).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import numpy as np

CMM_HEADER = ("timestamp,part_id,lot,feature,nominal_mm,tol_mm,measured_mm,part_temp_c,"
              "air_temp_c,scale_temp_c\n")
FEATURES = (("length_120", 120.0), ("width_80", 80.0), ("bore_50", 50.0))


def drop(folder: Path, name: str, text: str) -> None:
    tmp = folder / (name + ".tmp")
    tmp.write_text(text)
    tmp.replace(folder / name)


def bulk_csv(rows: int, t0_ns: int, step_ns: int, rng: np.random.Generator) -> str:
    ts = t0_ns + step_ns * np.arange(rows, dtype=np.int64)
    vals = np.round(20 + rng.standard_normal((rows, 3)), 4)
    lines = [f"{t},{a},{b},{c}\n" for t, (a, b, c) in zip(ts.tolist(), vals.tolist(),
                                                           strict=True)]
    return "ts,a,b,c\n" + "".join(lines)


def cmm_csv(rows: int, first_part: int, now_s: float, rng: np.random.Generator) -> str:
    out = [CMM_HEADER]
    for i in range(rows):
        part = first_part + i // len(FEATURES)
        feat, nominal = FEATURES[i % len(FEATURES)]
        air = 21.0 + 0.5 * rng.standard_normal()
        part_t = air + 0.3 * rng.standard_normal()
        measured = nominal * (1 + 23.6e-6 * (part_t - 20)) + 0.002 * rng.standard_normal()
        out.append(f"{now_s + i * 1e-4:.4f},P{part:08d},L{part // 100:05d},{feat},{nominal},"
                   f"0.05,{measured:.5f},{part_t:.3f},{air:.3f},{air + 0.1:.3f}\n")
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bulk-dir", required=True)
    ap.add_argument("--cmm-dir", required=True)
    ap.add_argument("--rate-file", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keep-s", type=float, default=120.0)
    args = ap.parse_args()
    bulk_dir, cmm_dir, out = Path(args.bulk_dir), Path(args.cmm_dir), Path(args.out)
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    rng = np.random.default_rng(3)
    bulk_sent = cmm_sent = files = 0
    part = 0
    last_ns = time.time_ns()
    due = time.monotonic()
    while not stopping:
        now = time.monotonic()
        if now < due:
            time.sleep(min(due - now, 0.1))
            continue
        due += 1.0
        try:
            rates = json.loads(Path(args.rate_file).read_text())
        except (OSError, ValueError):
            rates = {}
        rows = int(float(rates.get("bulk", 0)) / 3)
        if rows:
            step = max(1, 1_000_000_000 // rows)
            t0 = max(last_ns + step, time.time_ns() - 1_000_000_000)
            drop(bulk_dir, f"bulk-{files:07d}.csv", bulk_csv(rows, t0, step, rng))
            last_ns = t0 + step * (rows - 1)
            bulk_sent += 3 * rows
        n_cmm = int(float(rates.get("cmm", 0)))
        if n_cmm:
            drop(cmm_dir, f"cmm-{files:07d}.csv", cmm_csv(n_cmm, part, time.time(), rng))
            part += n_cmm // len(FEATURES) + 1
            cmm_sent += n_cmm
        files += 1
        limit = time.time() - args.keep_s
        for folder in (bulk_dir, cmm_dir):
            for entry in os.scandir(folder):
                if entry.name.endswith(".csv") and entry.stat().st_mtime < limit:
                    Path(entry.path).unlink()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"bulk_sent": bulk_sent, "cmm_sent": cmm_sent,
                                   "files": files, "idle": not (rows or n_cmm)}))
        tmp.replace(out)


if __name__ == "__main__":
    main()
