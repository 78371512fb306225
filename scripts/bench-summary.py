#!/usr/bin/env python3
"""Medians of the runs scripts/bench-table wrote (one JSON report per run).

    python3 scripts/bench-summary.py /tmp/herald-bench

Prints one line per row and log: the median, and every run's value in
brackets, of the figures the issue 14 table quotes; FAILED when any run of
the row failed its checks (loss, duplicates, order, connections).
"""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/herald-bench"


def get(d, path):
    for p in path.split("."):
        if isinstance(d, list):
            d = d[int(p)]
        else:
            d = d.get(p, 0) if isinstance(d, dict) else 0
    return d or 0


FIGURES = {
    "ws1k": ["transports.0.latency.p50_ms", "transports.0.latency.p99_ms", "server.cpu_cores", "server.rss_after_kb"],
    "sse1k": ["transports.0.latency.p50_ms", "transports.0.latency.p99_ms", "server.cpu_cores", "server.rss_after_kb"],
    "ws5k": ["transports.0.latency.p50_ms", "transports.0.latency.p99_ms", "server.cpu_cores", "server.rss_after_kb"],
    "publish": ["publish.per_second", "publish.ack_latency.p50_ms", "server.cpu_cores"],
    "pipelined": ["publish.per_second", "publish.ack_latency.p50_ms", "server.cpu_cores"],
    "recovery": ["transports.0.time.p50_ms", "transports.1.time.p50_ms"],
    "storm": ["live_again.p50_ms", "live_again.p99_ms", "first_event.p99_ms"],
    "failover": ["first_event.p99_ms", "live_again.p99_ms"],
    "idle": ["server.per_connection_kb", "drops"],
    "idlesse": ["server.per_connection_kb", "drops"],
}

runs = {}
for f in sorted(glob.glob(os.path.join(out, "*-*-*.json")) + glob.glob(os.path.join(out, "pgbench-*.txt"))):
    row, log, rep = os.path.basename(f).rsplit(".", 1)[0].split("-")
    runs.setdefault((row, log), []).append(f)

order = list(FIGURES) + ["pgbench"]
for row in order:
    for log in ("memory", "postgres", "centrifugo"):
        files = runs.get((row, log))
        if not files:
            continue
        if row == "pgbench":
            tps, lat = [], []
            for f in files:
                t = open(f).read()
                m1 = re.search(r"tps = ([\d.]+)", t)
                m2 = re.search(r"latency average = ([\d.]+) ms", t)
                if m1 and m2:
                    tps.append(float(m1.group(1)))
                    lat.append(float(m2.group(1)))
            print(f"{row:9} {log:8} tps {statistics.median(tps):.0f} {[round(x) for x in tps]}  latency avg ms {statistics.median(lat):.2f} {lat}")
            continue
        reports, failed = [], 0
        for f in files:
            try:
                r = json.load(open(f))
            except (OSError, ValueError):
                failed += 1
                continue
            reports.append(r)
            failed += 0 if r.get("passed") else 1
        parts = []
        for path in FIGURES[row]:
            vals = [float(get(r, path)) for r in reports]
            if vals:
                parts.append(f"{path} {statistics.median(vals):.2f} {[round(v, 2) for v in vals]}")
        status = f"FAILED {failed} of {len(files)}" if failed else f"{len(files)} runs passed"
        print(f"{row:9} {log:8} {status}; " + "; ".join(parts))
