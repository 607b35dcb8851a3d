#!/usr/bin/env python3
"""Where an update's time goes between cluster nodes, from the nodes' logs.

Run the cluster scenario with weft's `weft::latency` trace on, through a
wrapper that bench/compare.sh takes as the weft binary:

    printf '#!/bin/bash\\nargs=(); for a in "$@"; do [ "$a" = warn ] && a=warn,weft::latency=trace; args+=("$a"); done\\nexec %s "${args[@]}"\\n' \\
        "$PWD/target/release/weft" > /tmp/weft-traced && chmod +x /tmp/weft-traced
    bench/compare.sh --only cluster --weft-bin /tmp/weft-traced --out target/bench-trace
    bench/latency.py target/bench-trace 1      # the second trial (5,000 updates/s)

The nodes log (doc/actor/cluster.rs, broker/follow.rs):
  node 1 (the writer's): `append sent` (n, oldest_us: how long the oldest
  update of the batch waited since the actor's handle took it) and
  `appended` (first, last: the entries' ids) around the XADD pipeline;
  nodes 2 and 3: `read` (the follower's XREAD returned), `actor got`,
  `relayed` (queued to the peers), each with the first and last id.
Log lines carry wall-clock microseconds; all nodes run on one machine.
A Redis id's milliseconds are Redis's clock when the XADD ran.
Trials are told apart by gaps of more than 2 s in the trace.
"""

import datetime
import re
import sys

KV = re.compile(r'(\w+)=("?)([^ "]*)\2')
LINE = re.compile(r'(\S+)\s+TRACE .*?weft::latency: (append sent|appended|read|actor got|relayed)(.*)$')


def events(path):
    for line in open(path, errors="replace"):
        m = LINE.match(line.strip())
        if not m:
            continue
        t = datetime.datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f")
        t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
        yield t, m.group(2), {k: v for k, _, v in KV.findall(m.group(3))}


def trial(path, k):
    """The k-th run of events separated by more than 2 s."""
    out, cur, prev = [], [], None
    for e in events(path):
        if prev is not None and e[0] - prev > 2:
            out.append(cur)
            cur = []
        cur.append(e)
        prev = e[0]
    out.append(cur)
    return out[k] if k < len(out) else []


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def show(name, xs):
    if xs:
        print(f"  {name}: n {len(xs)}, p50 {pct(xs, .5):.2f}, p90 {pct(xs, .9):.2f}, "
              f"p99 {pct(xs, .99):.2f}, max {max(xs):.2f} ms")


def redis_ms(entry_id):
    return int(entry_id.split("-")[0]) / 1000


def main():
    out = sys.argv[1]
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    waits, round_trips, hops, sizes = [], [], [], []
    appended = {}
    sent = last_appended = None
    for t, what, f in trial(f"{out}/cluster-node1.log", k):
        if what == "append sent":
            waits.append(int(f["oldest_us"]) / 1000)
            sizes.append(int(f["n"]))
            if last_appended is not None and t - last_appended < 0.002:
                hops.append((t - last_appended) * 1000)
            sent = t
        elif what == "appended":
            if sent is not None:
                round_trips.append((t - sent) * 1000)
            appended[f["last"]] = t
            last_appended = t
    print(f"node 1: {len(round_trips)} appends, {sum(sizes)} updates")
    show("oldest update's wait in the actor (handle -> XADD sent)", waits)
    show("XADD pipeline round trip", round_trips)
    show("XADD returned -> next XADD sent, back to back", hops)
    for node in (2, 3):
        got, read = {}, {}
        stages = {}
        for t, what, f in trial(f"{out}/cluster-node{node}.log", k):
            last = f.get("last")
            if what == "read":
                read[last] = t
            elif what == "actor got":
                got[last] = t
            elif what == "relayed" and last in read and last in got:
                tr, tg = read[last], got[last]
                stages.setdefault("Redis ran the XADD (id, ms) -> follower read", []).append(
                    (tr - redis_ms(f["first"])) * 1000)
                if last in appended:
                    stages.setdefault("node 1 XADD returned -> follower read", []).append(
                        (tr - appended[last]) * 1000)
                stages.setdefault("follower read -> actor got", []).append((tg - tr) * 1000)
                stages.setdefault("actor got -> relayed", []).append((t - tg) * 1000)
        print(f"node {node}:")
        for name, xs in stages.items():
            show(name, xs)


if __name__ == "__main__":
    main()
