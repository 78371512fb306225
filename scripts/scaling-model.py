#!/usr/bin/env python3
"""Where each limit of a Herald deployment bites at 1x, 10x, 100x and 1,000x
today's load (docs/scaling.md). Every input is a flag; the defaults are the
figures measured on the 2-core machine of docs/benchmarks.md and
docs/scaling.md (see there for how), and the load of issue 14's table.

    python3 scripts/scaling-model.py
    python3 scripts/scaling-model.py --pg-writes 9000 --pg-cores 16

Load at scale k: k x EVENTS events/s published, each delivered to FANOUT
subscribers (k x EVENTS x FANOUT deliveries/s), k x CONNS connections.
Instances: enough for the deliveries at UTIL of their cores and for the
connections in their memory. One PostgreSQL: the writes (one writer under
the global position lock, batched commits, one NOTIFY per commit) against
its measured ceiling, and its CPU: WRITE_MS per event written, plus every
instance reading every event (N x events/s rows, READ_ROWS per core). P databases (channels hashed across
them): each takes 1/P of the writes; with instances grouped by partition
(a channel's subscribers on its partition's instances) each database is
read by N/P instances, without grouping by all N.
"""
import argparse
import math

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--events", type=float, default=100, help="today: events/s published")
p.add_argument("--fanout", type=float, default=1000, help="today: subscribers per event")
p.add_argument("--conns", type=float, default=10000, help="today: connections held")
p.add_argument("--deliveries-per-core", type=float, default=45000, help="WebSocket deliveries/s one server core sends (issue 14: 50k/s at 1.07 cores, 5k subs x 10/s)")
p.add_argument("--kb-per-conn", type=float, default=24, help="server memory per idle WebSocket, KB (measured)")
p.add_argument("--inst-cores", type=float, default=8, help="cores per instance")
p.add_argument("--inst-gb", type=float, default=16, help="memory per instance, GB (half of it for connections)")
p.add_argument("--util", type=float, default=0.6, help="target CPU utilisation of an instance")
p.add_argument("--pg-writes", type=float, default=4500, help="durable publishes/s one PostgreSQL takes under the write lock (measured: pipelined, N=1)")
p.add_argument("--pg-cores", type=float, default=16, help="cores of the PostgreSQL server")
p.add_argument("--write-ms", type=float, default=0.2, help="PostgreSQL CPU ms per event written (assumed: batched INSERT, WAL, index)")
p.add_argument("--read-rows", type=float, default=160000, help="event rows/s one PostgreSQL core returns to the hubs' `id > head` reads (measured with pgbench)")
a = p.parse_args()

print("| load | events/s | deliveries/s | connections | instances N | 1 DB: writes ÷ ceiling | 1 DB: CPU cores (writes + N reads) | databases P needed | what bites first |")
print("|---|---|---|---|---|---|---|---|---|")
for k in (1, 10, 100, 1000):
    e, conns = k * a.events, k * a.conns
    d = e * a.fanout
    n_cpu = math.ceil(d / (a.deliveries_per_core * a.inst_cores * a.util))
    n_mem = math.ceil(conns * a.kb_per_conn / (a.inst_gb * 1e6 / 2))
    n = max(n_cpu, n_mem, 1)
    w = e / a.pg_writes
    cpu = e * a.write_ms / 1000 + n * e / a.read_rows
    # P so that each database's writes stay under 60% of the ceiling and
    # its CPU under 60% of its cores, instances grouped by partition.
    P = 1
    while e / P / a.pg_writes > 0.6 or (e / P) * a.write_ms / 1000 + max(n / P, 1) * (e / P) / a.read_rows > 0.6 * a.pg_cores:
        P += 1
    limits = []
    if w > 0.6:
        limits.append(f"write ceiling ({w:.1f}× of one DB)")
    if cpu > 0.6 * a.pg_cores:
        limits.append(f"DB CPU ({cpu:.1f} of {a.pg_cores:.0f} cores)")
    if n > 1:
        limits.append(f"instances by {'memory' if n_mem >= n_cpu else 'CPU'}")
    print(f"| {k}× | {e:,.0f} | {d:,.0f} | {conns:,.0f} | {n} | {w:.2f} | {cpu:.2f} | {P} | {'; '.join(limits) or 'nothing'} |")
