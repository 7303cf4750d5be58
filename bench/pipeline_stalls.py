"""Where the event loop is held: busy stretches of the main thread in a py-spy capture.

``py-spy record --idle --format speedscope -r 500 -p PID -o cap.json`` samples every
thread in time order, idle ones included. On the main thread a sample whose innermost
frame is the selector's ``select`` means the loop was waiting; a run of consecutive
non-idle samples is a stretch in which the loop did not get back to ``select``: what
any ready callback (a Modbus answer, a stop command) waited behind. For the longest
runs this prints their length and which callbacks (the frame under ``Handle._run``,
with the innermost frame of this repo) filled them, and for all runs the share of busy
time per callback.

    python bench/pipeline_stalls.py cap.json [--rate 500] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path
from typing import Any


def _label(frames: list[dict[str, Any]], stack: list[int]) -> str:
    names = [f"{frames[i]['name']} ({Path(frames[i].get('file', '')).name})" for i in stack]
    try:
        k = max(i for i, n in enumerate(names) if n.startswith("Handle._run"))
    except ValueError:
        k = len(names) - 2
    top = names[k + 1] if k + 1 < len(names) else names[-1]
    ours = [n for i, n in zip(stack, names, strict=True)
            if "/edge/" in frames[i].get("file", "")]
    leaf = ours[-1] if ours else names[-1]
    return f"{top} > {leaf}" if leaf != top else top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("capture", type=Path)
    ap.add_argument("--rate", type=float, default=500.0, help="py-spy -r used")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    doc = json.loads(args.capture.read_text())
    frames = doc["shared"]["frames"]
    main_prof = next(p for p in doc["profiles"] if "MainThread" in p["name"])
    ms = 1000.0 / args.rate
    runs: list[list[str]] = []
    cur: list[str] = []
    busy: collections.Counter[str] = collections.Counter()
    idle = 0
    for stack in main_prof["samples"]:
        leaf = frames[stack[-1]]["name"] if stack else ""
        if "select" in leaf and "selectors" in frames[stack[-1]].get("file", ""):
            idle += 1
            if cur:
                runs.append(cur)
                cur = []
            continue
        lab = _label(frames, stack)
        cur.append(lab)
        busy[lab] += 1
    if cur:
        runs.append(cur)
    total = idle + sum(busy.values())
    print(f"main thread: {total} samples ({total * ms / 1000:.1f} s), busy "
          f"{100 * sum(busy.values()) / max(total, 1):.1f}%, {len(runs)} busy stretches")
    lengths = sorted((len(r) * ms for r in runs), reverse=True)
    if lengths:
        n = len(lengths)
        print(f"stretch length: p50 {lengths[n // 2]:.1f} ms, p99 "
              f"{lengths[max(0, n // 100 - 1)]:.1f} ms, max {lengths[0]:.1f} ms")
    print(f"\nlongest {args.top} stretches (ms: callbacks by samples)")
    for r in sorted(runs, key=len, reverse=True)[: args.top]:
        parts = collections.Counter(r).most_common(4)
        print(f"{len(r) * ms:7.1f}  " + "; ".join(f"{k} x{v}" for k, v in parts))
    print("\nbusy time by callback")
    for k, v in busy.most_common(25):
        print(f"{100 * v / max(total, 1):5.1f}%  {k}")


if __name__ == "__main__":
    main()
