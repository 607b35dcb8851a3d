"""The "Webhook cost" section of docs/BENCHMARKS.md (issue 16): editing with
a webhook subscribed against none, from the results.json of
`bench/compare.sh --only webhooks` (its rounds alternate the two setups).
Used by report.py; standard library only."""

import report as r

BEGIN = "<!-- webhooks:begin (bench/report.py --webhooks ... --merge-into) -->"
END = "<!-- webhooks:end -->"
COMMAND = """for n in 1 2 3; do bench/compare.sh --only webhooks --out target/bench-webhooks-$n; done
python3 bench/report.py --webhooks target/bench-webhooks-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md"""
TARGET_COST = 0.05


def rows(run):
    return (((run.get("scenarios") or {}).get("webhooks") or {}).get("rows")) or []


def section(runs, command):
    pairs = []  # (none, webhook) per round, over every run
    for run in runs:
        by_round = {}
        for row in rows(run):
            by_round.setdefault(row["round"], {})[row["mode"]] = row
        pairs += [(v["none"], v["webhook"]) for v in by_round.values() if "none" in v and "webhook" in v]
    if not pairs:
        raise SystemExit("no webhooks scenario in the results (bench/compare.sh --only webhooks)")

    def column(key, mode):
        return [p[0 if mode == "none" else 1].get(key) for p in pairs]

    def cell(values, digits=None):
        med, lo, hi = r.median_range(values)
        if med is None:
            return "–"
        return r.fmt(med, digits) if lo == hi else f"{r.fmt(med, digits)} ({r.fmt(lo, digits)}–{r.fmt(hi, digits)})"

    durable_ratio = [r.ratio(w.get("durable_updates_s"), n.get("durable_updates_s")) for n, w in pairs]
    work_ratio = [r.ratio(w.get("durable_cpu_us_per_update"), n.get("durable_cpu_us_per_update")) for n, w in pairs]
    cpu_ratio = [r.ratio(w.get("many_server_cpu"), n.get("many_server_cpu")) for n, w in pairs]
    out = [BEGIN, "## Webhook cost (issue 16)", ""]
    out.append(
        "weft with one webhook subscribed (`--webhook`, every event type, a receiver in the load generator's "
        "process that answers 200 at once) against weft with none, in rounds that alternate the two on the same "
        f"machine; {len(pairs)} rounds, median (range). `document.updated` is debounced per document (2 s), so "
        "durable writes (8 documents written as fast as they commit) make a few posts a second and many "
        "documents (1,000 documents, each edited 4 times a second) a few hundred; the posts row counts what the "
        "receiver got in a round (both scenarios)."
    )
    out.append("")
    out.append("| scenario | metric | no webhook | one webhook | webhook / none |")
    out.append("| --- | --- | ---: | ---: | ---: |")
    out.append(f"| durable writes | updates/s stored then relayed (↑) | {cell(column('durable_updates_s', 'none'))} "
               f"| {cell(column('durable_updates_s', 'webhook'))} | {cell(durable_ratio, 3)} |")
    out.append(f"| durable writes | server CPU per update, µs (↓) | {cell(column('durable_cpu_us_per_update', 'none'), 2)} "
               f"| {cell(column('durable_cpu_us_per_update', 'webhook'), 2)} | {cell(work_ratio, 3)} |")
    out.append(f"| many documents | p50 latency ms (↓) | {cell(column('many_p50_ms', 'none'))} "
               f"| {cell(column('many_p50_ms', 'webhook'))} | |")
    out.append(f"| many documents | p99 latency ms (↓) | {cell(column('many_p99_ms', 'none'))} "
               f"| {cell(column('many_p99_ms', 'webhook'))} | |")
    out.append(f"| many documents | server CPU, share of one core (↓) | {cell(column('many_server_cpu', 'none'))} "
               f"| {cell(column('many_server_cpu', 'webhook'))} | {cell(cpu_ratio, 3)} |")
    out.append(f"| both | posts received | {cell(column('posts', 'none'))} | {cell(column('posts', 'webhook'))} | |")
    out.append("")
    med, _, _ = r.median_range(durable_ratio)
    ok = None if med is None else (1 - med) <= TARGET_COST
    cost = "–" if med is None else f"{(1 - med) * 100:.1f} %"
    out.append("| target | measured | verdict |")
    out.append("| --- | --- | --- |")
    out.append(f"| editing throughput with a webhook ≥ 95 % of none (durable writes) | cost {cost} | {r.verdict(ok)} |")
    med, _, _ = r.median_range(work_ratio)
    if med is not None:
        ok = (med - 1) <= TARGET_COST
        out.append(f"| server CPU per update with a webhook ≤ 105 % of none (durable writes) "
                   f"| {(med - 1) * 100:+.1f} % | {r.verdict(ok)} |")
    out.append("")
    out.append("Throughput on a shared machine moves with what else runs (the rounds without a webhook alone "
               "spread widely), and a busy machine weighs on the setup with more threads at work: on a machine "
               "shared with other sessions (2026-12-01, 1afe2bc) the same scenario gave a cost of 7.7 % and "
               "+7.4 % CPU per update, which a quiet machine (2026-12-02) did not repeat. The server's CPU time per "
               "update, the work an update costs, moves less than throughput: a slower round commits smaller "
               "groups, so each update carries more of a commit's fixed cost. Under callgrind, the same durable "
               "load costs the same instructions per update with a webhook and without (24,037 against 24,084, "
               "0.998), and `strace -c` counts the same syscalls per update; delivery wakes when the outbox has a "
               "new event, never per commit, and keeps one connection per subscription (bench/FINDINGS.md, "
               "\"Webhook cost: where it comes from\"). Run it on a quiet machine; the rounds say which.")
    out.append("")
    out.append("```sh")
    out.append(command)
    out.append("```")
    out.append("")
    out.append(END)
    return out


def webhooks_main(args):
    import json
    runs = [json.load(open(path)) for path in args.webhooks]
    r.merge_section(args.merge_into, section(runs, COMMAND), BEGIN, END)
