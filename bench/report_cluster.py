"""The "Cluster" section of docs/BENCHMARKS.md (issue 14): three weft nodes
over Redis and PostgreSQL beside one weft on the same PostgreSQL, from one
or more results.json files of `bench/compare.sh --only cluster` (median and
range over the runs). Used by report.py; standard library only."""

import report as r

CLUSTER_BEGIN = "<!-- cluster:begin (bench/report.py --cluster ... --merge-into) -->"
CLUSTER_END = "<!-- cluster:end -->"
CLUSTER_COMMAND = """for n in 1 2 3; do bench/compare.sh --only cluster --out target/bench-cluster-$n; done
python3 bench/report.py --cluster target/bench-cluster-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md"""

TARGET_P99_MS = 10.0
TARGET_RATE = 5000.0
TARGET_COST = 2.0


def trials(run):
    return ((run.get("scenarios") or {}).get("cluster") or {}).get("trials") or []


def pick(run, setup, rate):
    for t in trials(run):
        if t.get("setup") == setup and t.get("rate") == rate:
            return t
    return {}


def lat(t, key):
    return (t.get("latency") or {}).get(key)


def total_us(t):
    parts = [t.get("weft_cpu_us_per_update"), t.get("redis_cpu_us_per_update"), t.get("postgres_cpu_us_per_update")]
    if t.get("weft_cpu_us_per_update") is None:
        return None
    return sum(p for p in parts if p is not None)


def other_cpu(t):
    """Cores the rest of the machine used during a trial: the load
    generator's `other_cpu` less every server process of the trial (the
    trial names no one server, so its `other_cpu` still holds them)."""
    other, span = t.get("other_cpu"), t.get("span_s")
    if not isinstance(other, (int, float)) or not span:
        return None
    ours = sum(x for x in t.get("cpu_s") or [] if isinstance(x, (int, float)))
    return max(0.0, other - ours / span)


def metric_sum(t, nodes, name):
    """A /metrics series' change over the trial, summed over some nodes."""
    ms = t.get("weft_metrics") or []
    vals = [(ms[i] if i < len(ms) else {}).get(name) for i in nodes]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def mean_ms(t, nodes, series):
    s, c = metric_sum(t, nodes, series + "_sum"), metric_sum(t, nodes, series + "_count")
    return None if s is None or not c else s / c * 1000


def bucket_quantile_ms(t, nodes, series, q=0.99):
    """The upper bound (ms) of the /metrics bucket holding quantile `q` of a
    histogram's observations over the trial, summed over some nodes."""
    ms = t.get("weft_metrics") or []
    cum = {}
    for i in nodes:
        for k, v in (ms[i] if i < len(ms) else {}).items():
            if k.startswith(series + '_bucket{le="'):
                le = k[len(series) + len('_bucket{le="'):-2]
                cum[le] = cum.get(le, 0) + v
    total = cum.pop("+Inf", None)
    if not total:
        return None
    for le, c in sorted(((float(k), c) for k, c in cum.items())):
        if c >= q * total:
            return le * 1000
    return None


def updates_per_append(t):
    c = metric_sum(t, [0], "stream_append_duration_seconds_count")
    return None if not c else (t.get("sent") or 0) / c


def cluster_section(runs, command, quick=False):
    n = len(runs)

    def figure(values, digits=None):
        med, lo, hi = r.median_range(values)
        if med is None:
            return "–", None
        if n == 1 or lo == hi:
            return r.fmt(med, digits), med
        return f"{r.fmt(med, digits)} ({r.fmt(lo, digits)}–{r.fmt(hi, digits)})", med

    first = (runs[0].get("scenarios") or {}).get("cluster") or {}
    ver = runs[0].get("_versions") or {}
    m = runs[0].get("machine") or {}
    rates = sorted({t.get("rate") for run in runs for t in trials(run) if t.get("rate")})
    per_node = first.get("readers_per_node")
    out = [CLUSTER_BEGIN, "## Cluster (issue 14)", ""]
    if quick:
        out += ["**Quick run, not for the record.**", ""]
    out.append(
        f"Three weft nodes (`--db postgres://… --redis redis://…`) sharing one PostgreSQL {ver.get('postgres', '?')} "
        f"and one Redis {ver.get('redis', '?')} (`appendonly yes`, `appendfsync always`: every append fsynced, as "
        "docs/CLUSTER.md asks), a writer on node 1 and "
        f"{per_node} readers on each of nodes 2 and 3, beside **one weft on the same PostgreSQL without Redis**, with "
        f"the writer and all {first.get('readers')} readers on it. Every weft process, PostgreSQL and Redis are pinned "
        "to core 0 (`taskset`), the load generator to core 1: the cluster's three nodes and Redis share the one "
        "core the single node has to itself (with PostgreSQL). Each rate is measured on the single node, then at "
        f"once on the cluster ({r.fmt(first.get('warmup_s'))} s warm-up, {r.fmt(first.get('measure_s'))} s measured, "
        "a fresh document each), so the two share the machine's load. Latency: from the time an update was due "
        "at the writer (open loop) to its arrival at a reader, on the load generator's one clock; for the cluster "
        "every delivery crosses nodes (node 1 → Redis → node 2 or 3). CPU: utime+stime from `/proc/<pid>/stat` of "
        "each process over the trial (warm-up included, PostgreSQL's postmaster and backends summed) divided by "
        f"the updates the writer sent. {'Median (range) of ' + str(n) + ' runs.' if n > 1 else 'One run: not a headline.'}")
    out.append("")
    others = sorted(v for run in runs for t in trials(run) for v in [other_cpu(t)] if v is not None)
    pressure = sorted(v for run in runs for t in trials(run) for v in [t.get("cpu_pressure")] if isinstance(v, (int, float)))
    out.append(f"- machine: {m.get('nproc')} cores online ({m.get('cpus_online')}), {m.get('cpu_model')}, kernel "
               f"{m.get('kernel')}, {r.fmt(m.get('mem_gib'))} GiB; weft commit `{ver.get('weft_commit', '?')}`, "
               f"load generator and servers at nice {ver.get('nice', '?')}")
    loads = [run.get("_versions", {}).get("load_before") for run in runs]
    when = [run.get("_when") for run in runs]
    out.append(f"- load average (1, 5, 15 min) before each run: {'; '.join(l for l in loads if l) or '?'}"
               + (f"; runs finished {', '.join(w for w in when if w)}" if any(when) else ""))
    if others:
        out.append(f"- other work on the machine during the trials (busy cores less the load generator and every server "
                   f"process of the trial): median {r.fmt(others[len(others) // 2], 2)}, "
                   f"max {r.fmt(others[-1], 2)} cores; CPU pressure median {r.fmt(pressure[len(pressure) // 2] if pressure else None)}")
    out.append("")
    out.append("| writer updates/s | metric | one node | cluster (3 nodes) | cluster / one node |")
    out.append("| ---: | --- | ---: | ---: | ---: |")
    rows = [
        ("delivered updates/s (↑)", lambda t: t.get("delivered_s"), 0),
        ("updates missing", lambda t: t.get("missing"), 0),
        ("delivery latency p50 ms (↓)", lambda t: lat(t, "p50_ms"), None),
        ("delivery latency p99 ms (↓)", lambda t: lat(t, "p99_ms"), None),
        ("delivery latency max ms (↓)", lambda t: lat(t, "max_ms"), None),
        ("weft CPU µs per update, all nodes (↓)", lambda t: t.get("weft_cpu_us_per_update"), None),
        ("… node 1 (writer) / 2 / 3", None, None),
        ("Redis CPU µs per update", lambda t: t.get("redis_cpu_us_per_update"), None),
        ("PostgreSQL CPU µs per update", lambda t: t.get("postgres_cpu_us_per_update"), None),
        ("all processes, µs per update (↓)", total_us, None),
        ("stream append, mean ms (node 1)", lambda t: mean_ms(t, [0], "stream_append_duration_seconds"), None),
        ("updates per append (node 1)", updates_per_append, 1),
        ("stream append, 99% within ms (bucket bound, node 1)",
         lambda t: bucket_quantile_ms(t, [0], "stream_append_duration_seconds"), None),
        ("replication lag, mean ms (nodes 2, 3; whole ms)", lambda t: mean_ms(t, [1, 2], "stream_lag_seconds"), None),
        ("replication lag, 99% within ms (bucket bound, nodes 2, 3)",
         lambda t: bucket_quantile_ms(t, [1, 2], "stream_lag_seconds"), None),
    ]
    for rate in rates:
        for label, get, digits in rows:
            if get is None:
                cells = []
                for i in range(3):
                    vals = [((pick(run, "cluster", rate).get("nodes_cpu_us_per_update") or [None] * 3) + [None] * 3)[i]
                            for run in runs]
                    cells.append(figure(vals)[0])
                out.append(f"| {r.fmt(rate)} | {label} |  | {' / '.join(cells)} |  |")
                continue
            one = figure([get(pick(run, "single", rate)) for run in runs], digits)[0]
            many = figure([get(pick(run, "cluster", rate)) for run in runs], digits)[0]
            ratios = [r.ratio(get(pick(run, "cluster", rate)), get(pick(run, "single", rate))) for run in runs]
            rr = figure(ratios, 2)[0] if not any(w in label for w in ("missing", "append", "lag")) else ""
            if "Redis" in label:
                one = "–"
                rr = ""
            out.append(f"| {r.fmt(rate)} | {label} | {one} | {many} | {rr + '×' if rr and rr != '–' else ''} |")
    out.append("")
    p99 = [lat(pick(run, "cluster", TARGET_RATE), "p99_ms") for run in runs]
    missing = [pick(run, "cluster", TARGET_RATE).get("missing") for run in runs]
    p99_txt, p99_med = figure(p99)
    cost = [r.ratio(pick(run, "cluster", TARGET_RATE).get("weft_cpu_us_per_update"),
                    pick(run, "single", TARGET_RATE).get("weft_cpu_us_per_update")) for run in runs]
    cost_all = [r.ratio(total_us(pick(run, "cluster", TARGET_RATE)), total_us(pick(run, "single", TARGET_RATE)))
                for run in runs]
    cost_txt, cost_med = figure(cost, 2)
    cost_all_txt, cost_all_med = figure(cost_all, 2)
    out.append("| target | measured | verdict |")
    out.append("| --- | --- | --- |")
    ok = None if p99_med is None else (p99_med <= TARGET_P99_MS and all(x == 0 for x in missing if x is not None))
    out.append(f"| cross-node delivery p99 ≤ 10 ms at 5,000 updates/s | {p99_txt} ms | {r.verdict(ok)} |")
    ok = None if cost_med is None else cost_med <= TARGET_COST
    out.append(f"| cluster's CPU per update ≤ 2× the single node's (weft processes) | {cost_txt}× | {r.verdict(ok)} |")
    ok = None if cost_all_med is None else cost_all_med <= TARGET_COST
    out.append(f"| the same, with Redis and PostgreSQL counted | {cost_all_txt}× | {r.verdict(ok)} |")
    out.append("")
    out.append("```sh")
    out.append(command)
    out.append("```")
    out.append("")
    out.append(CLUSTER_END)
    return out


def cluster_main(args):
    runs = r.load_runs(args.cluster, trials, "no cluster scenario in it (bench/compare.sh --only cluster)")
    quick = any(x.get("quick") for x in runs)
    command = r.record_command(runs, CLUSTER_COMMAND)
    r.merge_section(args.merge_into, cluster_section(runs, command, quick=quick), CLUSTER_BEGIN, CLUSTER_END)
