#!/usr/bin/env python3
"""Turns weft-bench's results.json into docs/BENCHMARKS.md and one SVG chart
per scenario. Standard library only."""

import argparse
import datetime
import html
import json
import math
import os

SERVERS = ["weft", "reference", "relay"]
LABEL = {"weft": "weft", "reference": "@y/websocket-server", "relay": "null relay"}
COLOR = {"weft": "#2b6cb0", "reference": "#dd6b20", "relay": "#718096",
         "sqlite-normal": "#2b6cb0", "sqlite-full": "#2c5282", "none": "#a0aec0",
         "cold": "#2b6cb0", "crash": "#2c5282", "warm": "#90cdf4", "ref-warm": "#dd6b20",
         "without": "#2b6cb0", "with attacker": "#c05621"}

TARGETS = {
    "fanout_ref": 5.0,      # weft >= 5x reference
    "fanout_relay": 0.60,   # weft >= 60% of the null relay
    "many_p99_ms": 5.0,
    "idle_kib_conn": 16.0,
    "replay_speedup": 3.0,
    "cold_ms": 20.0,
    "durable_ups": 50_000.0,
    "durable_cost": 0.15,
    "hostile_rss_mib": 256.0,
    "hostile_p99_ms": 10.0,
}

HOSTILE_BEGIN = "<!-- hostile:begin (bench/report.py --hostile ... --merge-into) -->"
HOSTILE_END = "<!-- hostile:end -->"


def per_server(rows, key):
    """One figure of each server's row, as "weft / reference / relay"."""
    return " / ".join(fmt(row.get(key)) for row in rows)


def fmt(x, digits=None):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    if digits is not None:
        return f"{x:.{digits}f}"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def verdict(ok):
    if ok is None:
        return "n/a"
    return "**met**" if ok else "**missed**"


def walk(node, key):
    """Every value of `key` anywhere in a JSON tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            elif k != "best":  # a copy of one of the trials
                yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def by_server(rows):
    return {r.get("server"): r for r in rows or []}


def each_server(rows):
    """Each server's row (empty where it did not run), and the first row,
    which holds the scenario's parameters."""
    return tuple(rows.get(s, {}) for s in SERVERS), next(iter(rows.values()))


def compared(name, label, rows, key, target="", ok=None, note=""):
    """A row of the main table: one figure of each server's row (`key`, or a
    function of the row) and weft's ratio to the reference and the relay."""
    get = key if callable(key) else (lambda row: row.get(key))
    a, b, c = (get(row) for row in rows)
    return [name, label, a, b, c, ratio(a, b), ratio(a, c), target, ok, note]


# ---------------------------------------------------------------- SVG charts

def bar_chart(path, title, unit, groups, series, values, target=None, target_label=None, log=False):
    """groups: x labels; series: names; values[g][s] (None = no bar)."""
    width, height = 760, 340
    left, right, top, bottom = 80, 20, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    flat = [v for row in values for v in row if v is not None and v > 0]
    vmax = max(flat + ([target] if target else []) + [1e-9])
    vmin = min(flat + [vmax]) if flat else 1
    if log:
        lo = 10 ** math.floor(math.log10(max(vmin, 1e-9)))
        hi = 10 ** math.ceil(math.log10(vmax * 1.05))

        def y(v):
            v = max(v, lo)
            return top + plot_h - plot_h * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = []
        t = lo
        while t <= hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        step = nice_step(vmax * 1.1 / 5)
        hi = step * math.ceil(vmax * 1.1 / step)

        def y(v):
            return top + plot_h - plot_h * v / hi
        ticks = [step * i for i in range(int(round(hi / step)) + 1)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{html.escape(title)}</text>']
    for t in ticks:
        ty = y(t)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" fill="#4a5568">{html.escape(short(t))}</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
               f'text-anchor="middle" fill="#4a5568">{html.escape(unit)}</text>')
    gw = plot_w / max(len(groups), 1)
    bw = min(60, gw * 0.8 / max(len(series), 1))
    for gi, g in enumerate(groups):
        gx = left + gi * gw + (gw - bw * len(series)) / 2
        for si, s in enumerate(series):
            v = values[gi][si]
            if v is None:
                continue
            x = gx + si * bw
            top_y = y(v) if v > 0 else y(lo if log else 0)
            base_y = top + plot_h
            out.append(f'<rect x="{x:.1f}" y="{top_y:.1f}" width="{bw - 4:.1f}" height="{max(base_y - top_y, 0.5):.1f}" '
                       f'fill="{COLOR.get(s, "#4a5568")}"><title>{html.escape(LABEL.get(s, s))}: {fmt(v)}</title></rect>')
            out.append(f'<text x="{x + (bw - 4) / 2:.1f}" y="{top_y - 4:.1f}" text-anchor="middle" font-size="10">{html.escape(short(v))}</text>')
        out.append(f'<text x="{left + gi * gw + gw / 2:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{html.escape(g)}</text>')
    if target:
        ty = y(target)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="#c53030" stroke-dasharray="6 4"/>')
        out.append(f'<text x="{width - right - 4}" y="{ty - 5:.1f}" text-anchor="end" fill="#c53030">{html.escape(target_label or "target")}</text>')
    lx = left
    for s in series:
        out.append(f'<rect x="{lx}" y="{height - 24}" width="12" height="12" fill="{COLOR.get(s, "#4a5568")}"/>')
        name = LABEL.get(s, s)
        out.append(f'<text x="{lx + 16}" y="{height - 14}">{html.escape(name)}</text>')
        lx += 30 + 7 * len(name)
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#4a5568"/>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#4a5568"/>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def nice_step(raw):
    if raw <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def short(v):
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e3:
        return f"{v / 1e3:.3g}k"
    if a >= 10 or a == 0:
        return f"{v:.0f}"
    return f"{v:.2g}"


# ---------------------------------------------------------------- hostile peer

def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def spread(xs, digits=None):
    """ "median (min–max)" over runs, or the one value when they agree."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = median(xs)
    if isinstance(m, float) and m.is_integer() and (m == 0 or all(isinstance(x, int) for x in xs)):
        m = int(m)
    if min(xs) == max(xs):
        return fmt(m, digits)
    return f"{fmt(m, digits)} ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def hostile_run(h, attacked):
    return next((r for r in h.get("runs", []) if bool(r.get("attacker")) == attacked), {})


def dig(d, *path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def ends_text(ends):
    if not ends:
        return "none"
    return ", ".join(f"{k}: {fmt(v)}" for k, v in sorted(ends.items(), key=lambda kv: -kv[1]))


def hostile_section(results, svg_dir, svg_rel, command, quick=False):
    """The "Hostile peer" section from one or more results of the hostile
    scenario (`results`: the `scenarios.hostile` objects of each run, each
    with `_source` and `_machine` added). Figures are medians with the range."""
    h0 = results[0]
    n = len(results)
    doc = h0.get("document", {})
    alone = [hostile_run(h, False) for h in results]
    attacked = [hostile_run(h, True) for h in results]
    col = lambda runs, *path: [dig(r, *path) for r in runs]
    out = [HOSTILE_BEGIN, "", "## Hostile peer", ""]
    out.append(f"Issue 11's benchmark: {h0.get('clients')} honest clients on one document of "
               f"{fmt(doc.get('bytes'))} bytes ({fmt(doc.get('bytes', 0) / 1048576, 2)} MiB), measured twice on a fresh weft "
               "each time: alone, and with **one attacker** doing items 1, 3 and 4 of the issue at once. "
               f"weft runs with its **default limits** (token mode; not the `--rate-limit 0 --max-connections-per-ip 0` "
               "of the other scenarios). weft only: the reference server has no read-only peers, no rate limit, no "
               "budget for unfinished messages and no byte bound on its queues, so the attack would only measure how "
               "it falls over — on a machine shared with other work, where a Node process growing by gigabytes "
               "(the issue measured 1 GB from one 800-byte frame on the weft it was filed against) is not a fair thing to do to the others.")
    out.append("")
    if n >= 3:
        out.append(f"Figures are the **median of {n} runs**, with the range in parentheses.")
    else:
        out.append(f"Figures are from **{n} run{'s' if n > 1 else ''}** only; the record is the median of three "
                   "(see the commands below).")
    if quick:
        out.append("")
        out.append("**Quick run, not for the record**: fewer clients, a shorter window.")
    out.append("")
    out.append("| | without the attacker | with the attacker | target | verdict |")
    out.append("| --- | ---: | ---: | --- | --- |")
    p99_with = median(col(attacked, "latency", "p99_ms"))
    peak_with = median(col(attacked, "peak_rss_mib"))
    lost_with = col(attacked, "lost_connections")
    paste_lost = [sum((dig(r, "paste_probe", "ends") or {}).values()) if r.get("paste_probe") else None for r in attacked]
    paste_lost_alone = [sum((dig(r, "paste_probe", "ends") or {}).values()) if r.get("paste_probe") else None for r in alone]
    rows = [
        ("honest delivery latency p50, ms", "latency", "p50_ms", "", None),
        ("honest delivery latency p99, ms", "latency", "p99_ms", "≤ 10 ms",
         None if p99_with is None else p99_with <= TARGETS["hostile_p99_ms"]),
        ("honest delivery latency max, ms", "latency", "max_ms", "", None),
    ]
    for label, a, b, tgt, ok in rows:
        out.append(f"| {label} | {spread(col(alone, a, b))} | {spread(col(attacked, a, b))} | {tgt} | {verdict(ok) if tgt else ''} |")
    lost_ok = None if not lost_with else median([(a or 0) + (b or 0) for a, b in zip(lost_with, paste_lost)]) == 0
    out.append(f"| honest connections lost: of the {h0.get('clients')} typing clients / the paste probe's | "
               f"{spread(col(alone, 'lost_connections'))} / {spread(paste_lost_alone)} | "
               f"{spread(lost_with)} / {spread(paste_lost)} | none | {verdict(lost_ok)} |")
    out.append(f"| honest updates missing | {spread(col(alone, 'missing'))} | {spread(col(attacked, 'missing'))} | | |")
    out.append(f"| server peak RSS in the window (`VmHWM`), MiB | {spread(col(alone, 'peak_rss_mib'))} | "
               f"{spread(col(attacked, 'peak_rss_mib'))} | < 256 MiB under the attacker | "
               f"{verdict(None if peak_with is None else peak_with < TARGETS['hostile_rss_mib'])} |")
    grow = [None if a.get("peak_rss_mib") is None or a.get("rss_window_start_mib") is None
            else a["peak_rss_mib"] - a["rss_window_start_mib"] for a in attacked]
    grow_alone = [None if a.get("peak_rss_mib") is None or a.get("rss_window_start_mib") is None
                  else a["peak_rss_mib"] - a["rss_window_start_mib"] for a in alone]
    out.append(f"| … of which above the window's start, MiB | {spread(grow_alone)} | {spread(grow)} | | |")
    out.append(f"| server RSS when the window starts (clients joined), MiB | {spread(col(alone, 'rss_window_start_mib'))} | "
               f"{spread(col(attacked, 'rss_window_start_mib'))} | | |")
    out.append(f"| server RSS per joined client, KiB | {spread(col(alone, 'kib_per_joined_client'))} | "
               f"{spread(col(attacked, 'kib_per_joined_client'))} | | |")
    out.append(f"| server CPU, share of its core | {spread(col(alone, 'server_cpu'))} | {spread(col(attacked, 'server_cpu'))} | | |")
    out.append(f"| load generator: p99 / max lateness of a 1 ms timer, ms | "
               f"{spread(col(alone, 'gen_timer_lag', 'p99_ms'))} / {spread(col(alone, 'gen_timer_lag', 'max_ms'))} | "
               f"{spread(col(attacked, 'gen_timer_lag', 'p99_ms'))} / {spread(col(attacked, 'gen_timer_lag', 'max_ms'))} | | |")
    out.append(f"| other CPU (cores) / CPU pressure | {spread(col(alone, 'other_cpu'))} / {spread(col(alone, 'cpu_pressure'))} | "
               f"{spread(col(attacked, 'other_cpu'))} / {spread(col(attacked, 'cpu_pressure'))} | | |")
    out.append("")

    # why: bench/HOSTILE.md, written from the runs and the profiles
    findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "HOSTILE.md")
    if os.path.exists(findings) and not quick:
        out.append(open(findings).read().rstrip())
        out.append("")

    # what the attacker did
    out.append("### What the attacker did, every run, how it measures")
    out.append("")
    out.append("What the attacker sent and how weft answered (median over the runs; the close codes are summed over them):")
    out.append("")
    out.append("| part | connections opened | upgrades refused | frames sent | messages sent | MB received | how its connections ended |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    parts = [("answers", "item 1: frames of step1s + query-awareness, reading"),
             ("answers_stalled", "item 1: the same, never reading"),
             ("awareness_flood", "item 3: frames of awareness messages"),
             ("unfinished_messages", "item 4: 15 MiB without the final fragment, then pings")]
    for key, label in parts:
        tallies = [dig(r, "attack", key) or {} for r in attacked]
        if not any(tallies):
            continue
        ends = {}
        for t in tallies:
            for k, v in (t.get("ends") or {}).items():
                ends[k] = ends.get(k, 0) + v
        refused = [sum((t.get("refused") or {}).values()) for t in tallies]
        out.append(f"| {label} | {spread([t.get('connects') for t in tallies])} | {spread(refused)} | "
                   f"{spread([t.get('frames_sent') for t in tallies])} | {spread([t.get('messages_sent') for t in tallies])} | "
                   f"{spread([None if t.get('bytes_received') is None else t['bytes_received'] / 1e6 for t in tallies])} | {ends_text(ends)} |")
    reasons = {}
    for r in attacked:
        for key, _ in parts:
            for k, v in (dig(r, "attack", key, "close_reasons") or {}).items():
                reasons[k] = reasons.get(k, 0) + v
    if reasons:
        out.append("")
        out.append("Close reasons the attacker was given: " + "; ".join(f"`{k}` ({fmt(v)})" for k, v in
                                                                      sorted(reasons.items(), key=lambda kv: -kv[1])) + ".")
    probe_ends = {}
    for r in attacked:
        for k, v in (dig(r, "paste_probe", "ends") or {}).items():
            probe_ends[k] = probe_ends.get(k, 0) + v
    if probe_ends:
        out.append("")
        out.append("How the paste probe's connections ended under the attack (summed): "
                   + "; ".join(f"`{k}` ({fmt(v)})" for k, v in sorted(probe_ends.items(), key=lambda kv: -kv[1])) + ".")
    out.append("")

    # every run
    out.append("Every run:")
    out.append("")
    out.append("| run | attacker | p50 ms | p99 ms | max ms | lost | paste probe lost | peak RSS MiB | RSS at start MiB | server CPU | other CPU | CPU pressure | attacker CPU | frames the attacker sent |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, h in enumerate(results):
        for r in (hostile_run(h, False), hostile_run(h, True)):
            lat = r.get("latency") or {}
            probe = sum((dig(r, "paste_probe", "ends") or {}).values()) if r.get("paste_probe") else None
            out.append(f"| {h.get('_source', i + 1)} | {'yes' if r.get('attacker') else 'no'} | {fmt(lat.get('p50_ms'))} | "
                       f"{fmt(lat.get('p99_ms'))} | {fmt(lat.get('max_ms'))} | {fmt(r.get('lost_connections'))} | {fmt(probe)} | "
                       f"{fmt(r.get('peak_rss_mib'))} | {fmt(r.get('rss_window_start_mib'))} | {fmt(r.get('server_cpu'))} | "
                       f"{fmt(r.get('other_cpu'))} | {fmt(r.get('cpu_pressure'))} | {fmt(dig(r, 'attack', 'attacker_cpu'))} | "
                       f"{fmt(dig(r, 'attack', 'frames_sent'))} |")
    out.append("")

    # charts
    bar_chart(os.path.join(svg_dir, "hostile-latency.svg"), "Hostile peer: honest delivery latency", "ms",
              ["p50", "p99", "max"], ["without", "with attacker"],
              [[median(col(alone, "latency", k)), median(col(attacked, "latency", k))] for k in ("p50_ms", "p99_ms", "max_ms")],
              target=TARGETS["hostile_p99_ms"], target_label="target p99 10 ms", log=True)
    bar_chart(os.path.join(svg_dir, "hostile-rss.svg"), "Hostile peer: server RSS", "MiB",
              ["when the window starts", "peak in the window"], ["without", "with attacker"],
              [[median(col(alone, "rss_window_start_mib")), median(col(attacked, "rss_window_start_mib"))],
               [median(col(alone, "peak_rss_mib")), median(col(attacked, "peak_rss_mib"))]],
              target=TARGETS["hostile_rss_mib"], target_label="target 256 MiB under the attacker")
    out.append(f"![Hostile peer: latency]({svg_rel}/hostile-latency.svg)")
    out.append("")
    out.append(f"![Hostile peer: RSS]({svg_rel}/hostile-rss.svg)")
    out.append("")

    # how
    plan = h0.get("attack_plan", {})
    out.append("How it measures:")
    out.append("")
    out.append(f"- **The document**: {doc.get('how', '?')}; built in {fmt(doc.get('build_s'))} s on the load generator.")
    out.append(f"- **Honest clients**: {h0.get('clients')} connections from 127.0.0.1; each syncs the whole document at join "
               f"(as a browser tab does) and announces one awareness state, renewed every 15 s. {h0.get('writers')} of them "
               f"(write token) each send a ~33-byte marked update {fmt(h0.get('rate'))} times a second; the others have a read "
               "token; every client measures the delivery latency of the others' updates as in *Many documents*. Warm-up "
               f"{fmt(h0.get('warmup_s'))} s, then {fmt(h0.get('measure_s'))} s measured. Any close or error of an honest "
               "connection in the window is a lost connection. One more client, the **paste probe**, pastes "
               f"{fmt(h0.get('paste_bytes'))} bytes as one update every second (a message that spans several reads of the "
               "server) and reconnects when closed.")
    out.append(f"- **The attacker**: a process of its own (`weft-bench attack`), from {h0.get('attacker_ip', '127.0.0.2')} (another "
               "client IP), with its own read-only token, at nice +10 on the load generator's core, from the start of the "
               "warm-up to the end of the window. At once: "
               f"{plan.get('answer_conns')} connections sending frames of {plan.get('step1s_per_frame')} step1s (empty state "
               f"vector) interleaved with as many query-awareness messages every {plan.get('pause_ms')} ms and reading the answers, "
               f"{plan.get('answer_stalled')} doing the same without ever reading (item 1); {plan.get('flood_conns')} sending frames "
               f"of {plan.get('flood_msgs')} awareness messages (item 3); {plan.get('fragment_conns')} each sending "
               f"{fmt((plan.get('fragment_bytes') or 0) / 1048576, 0)} MiB of a message in 1 MiB fragments without the final one, then a "
               f"ping every 200 ms (item 4). Every connection the server closes (or an upgrade it refuses) is reopened after "
               f"{plan.get('backoff_ms')} ms; at most {fmt(plan.get('max_connects'))} attempts per connection slot and "
               f"{fmt(plan.get('max_frames'))} frames per connection.")
    if any(r.get("peak_rss_reset") is False for r in alone + attacked):
        out.append("- **Memory: `VmHWM` could not be reset on this machine**, so the peaks below include the setup.")
    out.append("- **Memory**: a fresh weft per run; `VmHWM` (`/proc/PID/status`) is reset (`clear_refs` 5) once the honest "
               "clients have joined, so *peak RSS in the window* is the peak from the window's start (warm-up included) to "
               "its end; `VmRSS` is sampled every 50 ms as a check. *RSS per joined client* is the growth from seeding the "
               "document to all clients joined, divided by the clients; it is negative when weft handed more memory back "
               "to the system between the two (`malloc_trim` after dropping built documents) than the clients added.")
    out.append("- **Noise**: the load generator's own scheduling delay is recorded as the lateness of a 1 ms timer; *other CPU* "
               "and *CPU pressure* as in the other scenarios.")
    out.append(f"- **Time**: the scenario takes {spread([h.get('scenario_s') for h in results])} s here (building the "
               "document, then both runs); the `--quick` form (20 clients, the first 20,000 edits of the trace, windows of "
               "1 + 3 s) about 13 s.")
    out.append("")
    out.append("```sh")
    out.append(command)
    out.append("```")
    out.append("")
    out.append(HOSTILE_END)
    return out


HOSTILE_COMMAND = """for n in 1 2 3; do bench/compare.sh --only hostile --out target/bench-hostile-$n; done
python3 bench/report.py --hostile target/bench-hostile-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md --svg-dir docs/bench"""


def merge_section(md_path, lines, begin=HOSTILE_BEGIN, end=HOSTILE_END):
    """Replaces the section between `begin` and `end` of an existing report
    (the hostile one unless told), or inserts it before its charts; the rest
    of the file is left as it is."""
    text = open(md_path).read() if os.path.exists(md_path) else "# Benchmarks\n"
    block = "\n".join(lines)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    elif "\n## Charts" in text:
        head, tail = text.split("\n## Charts", 1)
        text = head + "\n" + block + "\n\n## Charts" + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(md_path, "w") as f:
        f.write(text)


def hostile_main(args):
    results = []
    for i, path in enumerate(args.hostile):
        res = json.load(open(path))
        h = (res.get("scenarios") or {}).get("hostile")
        if not h:
            raise SystemExit(f"{path}: no hostile scenario in it")
        h["_source"] = os.path.basename(os.path.dirname(os.path.abspath(path))) or str(i + 1)
        results.append(h)
    quick = any(json.load(open(p)).get("quick") for p in args.hostile)
    md_dir = os.path.dirname(os.path.abspath(args.merge_into))
    svg_rel = os.path.relpath(os.path.abspath(args.svg_dir), md_dir)
    lines = hostile_section(results, args.svg_dir, svg_rel, HOSTILE_COMMAND, quick=quick)
    merge_section(args.merge_into, lines)


# ---------------------------------------------------------------- PostgreSQL store

POSTGRES_BEGIN = "<!-- postgres:begin (bench/report.py --postgres ... --merge-into) -->"
POSTGRES_END = "<!-- postgres:end -->"
POSTGRES_COMMAND = """for n in 1 2 3; do bench/compare.sh --only durable,manydocs --store postgres --out target/bench-pg-$n; done
python3 bench/report.py --postgres target/bench-pg-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md --svg-dir docs/bench"""


def median_range(values):
    """(median, low, high) of the numbers among `values`; Nones without any."""
    xs = sorted(v for v in values if isinstance(v, (int, float)))
    if not xs:
        return None, None, None
    mid = len(xs) // 2
    med = xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
    return med, xs[0], xs[-1]


def postgres_section(runs):
    """The "PostgreSQL store" section: durable writes and many documents on
    PostgreSQL beside SQLite and none, the median of the runs with their
    range."""
    def durable(run, mode, key):
        for r in (run.get("scenarios") or {}).get("durable") or []:
            if r.get("mode") == mode:
                return r.get(key) if key == "updates_s" else (r.get("latency") or {}).get(key)
        return None

    def many(run, server, key):
        for r in (run.get("scenarios") or {}).get("manydocs") or []:
            if r.get("server") == server:
                return (r.get("latency") or {}).get(key)
        return None

    def cell(values, digits=1):
        med, lo, hi = median_range(values)
        if med is None:
            return "–", "–"
        return f"{med:,.{digits}f}", f"{lo:,.{digits}f} – {hi:,.{digits}f}"

    out = [POSTGRES_BEGIN, "## PostgreSQL store", ""]
    out.append(f"weft on a PostgreSQL server on the same machine (Debian's package, "
               "default settings: `synchronous_commit = on`, `fsync = on`; started by `bench/compare.sh --store postgres`, "
               "pinned to the servers' core), beside weft on SQLite and with `--storage none`, in the same runs. "
               f"Median of {len(runs)} runs, range in brackets.")
    out.append("")
    out.append("| scenario | store | median | range (min – max) | latency ms, p50 / p99 (medians) |")
    out.append("| --- | --- | ---: | ---: | ---: |")
    for mode, label in (("sqlite-normal", "SQLite `--sync normal`"), ("sqlite-full", "SQLite `--sync full`"),
                        ("postgres", "PostgreSQL"), ("none", "`--storage none`")):
        med, rng = cell([durable(r, mode, "updates_s") for r in runs], 0)
        p50, _ = cell([durable(r, mode, "p50_ms") for r in runs], 2)
        p99, _ = cell([durable(r, mode, "p99_ms") for r in runs], 2)
        out.append(f"| durable writes, updates/s stored then relayed | {label} | {med} | {rng} | {p50} / {p99} |")
    for server, label in (("weft", "weft, SQLite"), ("weft-postgres", "weft, PostgreSQL"),
                          ("reference", "reference server"), ("relay", "null relay")):
        med, rng = cell([many(r, server, "p99_ms") for r in runs], 2)
        p50, _ = cell([many(r, server, "p50_ms") for r in runs], 2)
        if med == "–":
            continue
        out.append(f"| many documents, p99 latency ms | {label} | {med} | {rng} | {p50} / {med} |")
    out.append("")
    out.append("Commits in the durable-writes runs (weft's `/metrics`: commit time and jobs over commits), median of the runs:")
    out.append("")
    out.append("| store | mean commit ms | actor batches (jobs) per commit | updates per commit |")
    out.append("| --- | ---: | ---: | ---: |")
    for mode, label in (("sqlite-normal", "SQLite `--sync normal`"), ("sqlite-full", "SQLite `--sync full`"),
                        ("postgres", "PostgreSQL")):
        def metric(run, key, mode=mode):
            for r in (run.get("scenarios") or {}).get("durable") or []:
                if r.get("mode") == mode:
                    return (r.get("weft_metrics") or {}).get(key)
            return None
        per = lambda f: median_range([f(r) for r in runs])[0]
        commits = lambda r: metric(r, "storage_commits_total")
        secs = lambda r: metric(r, "storage_commit_seconds_total")
        jobs = lambda r: metric(r, "storage_jobs_total")
        upd = lambda r: metric(r, "updates_applied_total")
        safe = lambda a, b: None if a is None or not b else a / b
        out.append(f"| {label} | {fmt(per(lambda r: safe((secs(r) or 0) * 1000, commits(r))))} | "
                   f"{fmt(per(lambda r: safe(jobs(r), commits(r))))} | {fmt(per(lambda r: safe(upd(r), commits(r))))} |")
    out.append("")
    pressure = [r.get("_versions", {}).get("cpu_pressure_avg300_before") for r in runs]
    others = [x.get("other_cpu") for r in runs for x in (r.get("scenarios") or {}).get("manydocs") or []]
    lo_other, hi_other = median_range(others)[1:]
    out.append("A PostgreSQL commit waits for its WAL to reach the disk (as SQLite's `--sync full` does; `--sync normal` "
               "does not wait for the disk at all) and for the answers of another process over TCP; the mean commit "
               "above is what that costs here, and the many-documents latency is about two commits (the one in "
               "progress, then the update's own). CPU pressure (`/proc/pressure/cpu`, some avg300) before each run: "
               f"{', '.join(str(p) + ' %' for p in pressure if p)}; other processes took {fmt(lo_other)}–{fmt(hi_other)} "
               "cores during the many-documents runs: the machine was shared with other work, which weighs on the "
               "servers that need more processes and wake-ups (PostgreSQL, the reference server) most.")
    out.append("")
    pg, _, _ = median_range([durable(r, "postgres", "updates_s") for r in runs])
    sq, _, _ = median_range([durable(r, "sqlite-normal", "updates_s") for r in runs])
    share = None if pg is None or not sq else pg / sq
    p99, _, _ = median_range([many(r, "weft-postgres", "p99_ms") for r in runs])
    out.append("| target | measured | verdict |")
    out.append("| --- | --- | --- |")
    out.append(f"| PostgreSQL durable writes ≥ 50% of SQLite's (`--sync normal`) | "
               f"{'–' if share is None else f'{share * 100:.0f}%'} ({fmt(pg)} vs {fmt(sq)} updates/s) | "
               f"{verdict(None if share is None else share >= 0.5)} |")
    out.append(f"| many documents on PostgreSQL: p99 ≤ 10 ms | {fmt(p99)} ms | {verdict(None if p99 is None else p99 <= 10.0)} |")
    out.append("")
    out.append("Reproduce:")
    out.append("")
    out.append("```")
    out.append(POSTGRES_COMMAND)
    out.append("```")
    out.append("")
    out.append(POSTGRES_END)
    return out


def postgres_main(args):
    runs = []
    for path in args.postgres:
        res = json.load(open(path))
        if not any(r.get("mode") == "postgres" for r in (res.get("scenarios") or {}).get("durable") or []):
            raise SystemExit(f"{path}: no PostgreSQL durable run in it (bench/compare.sh --store postgres)")
        versions = os.path.join(os.path.dirname(os.path.abspath(path)), "versions.json")
        res["_versions"] = json.load(open(versions)) if os.path.exists(versions) else {}
        runs.append(res)
    merge_section(args.merge_into, postgres_section(runs), POSTGRES_BEGIN, POSTGRES_END)


# ---------------------------------------------------------------- Hocuspocus protocol

HOCUS_BEGIN = "<!-- hocuspocus:begin (bench/report.py --hocuspocus ... --merge-into) -->"
HOCUS_END = "<!-- hocuspocus:end -->"
HOCUS_COMMAND = """for n in 1 2 3; do bench/compare.sh --only hocuspocus --out target/bench-hocus-$n; done
python3 bench/report.py --hocuspocus target/bench-hocus-{1,2,3}/results.json --merge-into docs/BENCHMARKS.md --svg-dir docs/bench"""


def hocus_section(runs, command, quick=False):
    """The "Hocuspocus protocol" section: weft's /hocuspocus beside
    @hocuspocus/server with its SQLite extension; with several runs, the
    median and the range of each figure."""
    def rows(run, key):
        return ((run.get("scenarios") or {}).get("hocuspocus") or {}).get(key) or []

    def pick(run, key, server, readers=None):
        for r in rows(run, key):
            if r.get("server") == server and (readers is None or r.get("readers") == readers):
                return r
        return {}

    def figure(values, digits=None):
        med, lo, hi = median_range(values)
        if med is None:
            return "–", None
        if len(runs) == 1 or lo == hi:
            return fmt(med, digits), med
        return f"{fmt(med, digits)} ({fmt(lo, digits)}–{fmt(hi, digits)})", med

    ver = runs[0].get("_versions") or {}
    n = len(runs)
    out = [HOCUS_BEGIN, "## Hocuspocus protocol (issue 15)", ""]
    if quick:
        out += ["**Quick run, not for the record.**", ""]
    out.append("weft's `/hocuspocus` endpoint (defaults: `--storage sqlite --sync normal`; a SyncStatus is sent once the "
               f"update is committed) beside `@hocuspocus/server` {ver.get('hocuspocus_server', '4.7.0')} with "
               f"`@hocuspocus/extension-sqlite` {ver.get('hocuspocus_sqlite', '4.7.0')} at their defaults (store debounced "
               "2 s, at most 10 s; broadcasts batched per event-loop turn), Node "
               f"{ver.get('node', '?')}, installed from bench/hocuspocus/package-lock.json. The same load generator speaks "
               "the Hocuspocus protocol to both (auth message, then y-sync under the document's address, one document per "
               "socket); readers count every update of a frame, since @hocuspocus/server merges the updates it broadcasts. "
               f"Servers pinned to one core, the load generator to the other. {'Median (range) of ' + str(n) + ' runs.' if n > 1 else 'One run: not a headline.'}")
    out.append("")
    m = runs[0].get("machine") or {}
    others = sorted(v for run in runs for v in walk((run.get("scenarios") or {}).get("hocuspocus"), "other_cpu")
                    if isinstance(v, (int, float)))
    pressure = sorted(v for run in runs for v in walk((run.get("scenarios") or {}).get("hocuspocus"), "cpu_pressure")
                      if isinstance(v, (int, float)))
    out.append(f"- machine: {m.get('nproc')} cores online ({m.get('cpus_online')}), {m.get('cpu_model')}, kernel "
               f"{m.get('kernel')}, {fmt(m.get('mem_gib'))} GiB; weft commit `{ver.get('weft_commit', '?')}`, "
               f"load generator and servers at nice {ver.get('nice', '?')}")
    if others:
        out.append(f"- other work on the machine during the measurements: other CPU median {fmt(others[len(others) // 2], 2)}, "
                   f"max {fmt(others[-1], 2)} cores; CPU pressure median {fmt(pressure[len(pressure) // 2] if pressure else None)}")
    out.append("")
    out.append("| scenario | metric | weft | @hocuspocus/server | weft / hocuspocus | target | verdict |")
    out.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
    readers = sorted({r.get("readers") for run in runs for r in rows(run, "fanout") if r.get("readers")})
    for nr in readers:
        vals = {}
        cells = {}
        lower = set()
        for s in ("weft", "hocuspocus"):
            v = []
            for run in runs:
                r = pick(run, "fanout", s, nr)
                v.append(((r.get("best") or {}).get("delivered_s")))
                if r.get("lower_bound") and (r.get("best") or {}).get("delivered_s") is not None:
                    lower.add(s)
            cells[s], vals[s] = figure(v)
        per_run = [ratio(((pick(run, "fanout", "weft", nr).get("best") or {}).get("delivered_s")),
                         ((pick(run, "fanout", "hocuspocus", nr).get("best") or {}).get("delivered_s"))) for run in runs]
        rtxt, rmed = figure(per_run, 1)
        ok = None if rmed is None else rmed >= 5
        note = f" (≥: no rate failed for {', '.join(sorted(lower))})" if lower else ""
        out.append(f"| fan-out, 1 writer → {nr} readers | delivered updates/s at p99 ≤ 50 ms (↑){note} | {cells['weft']} | "
                   f"{cells['hocuspocus']} | {rtxt}× | ≥ 5× | {verdict(ok)} |")
    first = pick(runs[0], "manydocs", "weft") or pick(runs[0], "manydocs", "hocuspocus")
    if first:
        name = f"many documents: {first.get('docs', 0):,} docs × {first.get('clients_per_doc')} clients × 1 edit/s"
        for key, label in (("p50_ms", "p50 latency ms (↓)"), ("p99_ms", "p99 latency ms (↓)"),
                           ("server_cpu", "server CPU, share of one core (↓)"), ("missing", "updates missing (↓)")):
            get = (lambda r, key=key: (r.get("latency") or {}).get(key)) if key.endswith("_ms") else (lambda r, key=key: r.get(key))
            c = {s: figure([get(pick(run, "manydocs", s)) for run in runs])[0] for s in ("weft", "hocuspocus")}
            rr = figure([ratio(get(pick(run, "manydocs", "weft")), get(pick(run, "manydocs", "hocuspocus"))) for run in runs], 2)[0]
            out.append(f"| {name} | {label} | {c['weft']} | {c['hocuspocus']} | {rr if key != 'missing' else ''} |  |  |")
    silent = [s for s in ("weft", "hocuspocus") for run in runs if pick(run, "manydocs", s).get("missing")]
    crash = {s: [pick(run, "crash", s) for run in runs] for s in ("weft", "hocuspocus")}
    if any(crash["weft"]) or any(crash["hocuspocus"]):
        def listed(s, key):
            return " / ".join(fmt(r.get(key)) for r in crash[s] if r)
        lost_w = [r.get("lost_acknowledged") for r in crash["weft"] if r]
        ok = None if not lost_w else all(x == 0 for x in lost_w)
        sent = next((r.get("sent") for r in crash["weft"] if r), None)
        out.append(f"| crash: {fmt(sent)} edits, SIGKILL after the last acknowledgement, restart on the same database | "
                   f"edits acknowledged (SyncStatus 1), per run | {listed('weft', 'acknowledged')} | {listed('hocuspocus', 'acknowledged')} |  |  |  |")
        out.append(f"| crash (same runs) | acknowledged edits lost (↓), per run | {listed('weft', 'lost_acknowledged')} | "
                   f"{listed('hocuspocus', 'lost_acknowledged')} |  | weft 0 | {verdict(ok)} |")
    out.append("")
    if silent:
        out.append(f"**Many documents on {', '.join(sorted(set(silent)))}: updates late, some past the grace period.** "
                   "An update that has not reached its reader 1.5 s after the measured window counts as missing (and "
                   "as 10 s late in the latency rows); there was no disconnect. Where updates were missing, the same "
                   "server was seconds behind in the other runs too (p50 and p99 rows) while using most of its core "
                   "(CPU row): it falls behind at 4,000 updates/s over 4,000 sockets, and what is missing is the end "
                   "of that backlog. At 50 documents the same scenario delivers every update on time.")
        out.append("")
    out.append("Fan-out and many documents are measured as the y-websocket scenarios above are (open-loop writer, trials "
               "of warm-up + measured window on a fresh document, a failing trial repeated once); the Hocuspocus fan-out "
               "search starts at 5,000 deliveries/s. Crash: a fresh client on a new document sends its edits at a fixed "
               "rate without syncing (so every SyncStatus answers an edit), waits for the last acknowledgement (or a "
               "deadline), the server gets SIGKILL at once, restarts on the same database, and a fresh client syncs the "
               "document: an acknowledged edit whose mark is not in it is lost.")
    out.append("")
    out.append("```sh")
    out.append(command)
    out.append("```")
    out.append("")
    out.append(HOCUS_END)
    return out


def load_runs(paths, has, missing):
    """The results.json files of a section's runs, each with the versions
    and the command of its run beside it; `missing` names the compare.sh
    run a file without the scenario (`has` false) should come from."""
    runs = []
    for path in paths:
        res = json.load(open(path))
        if not has(res):
            raise SystemExit(f"{path}: {missing}")
        here = os.path.dirname(os.path.abspath(path))
        versions = os.path.join(here, "versions.json")
        res["_versions"] = json.load(open(versions)) if os.path.exists(versions) else {}
        run = os.path.join(here, "run.json")
        res["_command"] = json.load(open(run)).get("command") if os.path.exists(run) else None
        res["_when"] = (datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
                        .strftime("%Y-%m-%d %H:%M UTC"))
        runs.append(res)
    return runs


def record_command(runs, record):
    """The commands the runs were made with, then `record` (how to make the
    record again)."""
    measured = [r["_command"] for r in runs if r.get("_command")]
    if not measured:
        return record
    # Runs made with one command say it once.
    distinct = list(dict.fromkeys(measured))
    if len(distinct) == 1 and len(measured) > 1:
        head = f"# as measured ({len(measured)} times):\n{distinct[0]}"
    else:
        head = "# as measured:\n" + "\n".join(measured)
    return head + "\n# the record: the median of three runs\n" + record


def hocus_main(args):
    runs = load_runs(args.hocuspocus, lambda res: (res.get("scenarios") or {}).get("hocuspocus"),
                     "no hocuspocus scenario in it (bench/compare.sh --only hocuspocus)")
    quick = any(r.get("quick") for r in runs)
    command = record_command(runs, HOCUS_COMMAND)
    merge_section(args.merge_into, hocus_section(runs, command, quick=quick), HOCUS_BEGIN, HOCUS_END)


# ---------------------------------------------------------------- the report

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results")
    ap.add_argument("--versions")
    ap.add_argument("--run")
    ap.add_argument("--md")
    ap.add_argument("--svg-dir")
    ap.add_argument("--hostile", nargs="+", metavar="RESULTS",
                    help="results.json files of hostile runs: their median goes into --merge-into's hostile section")
    ap.add_argument("--postgres", nargs="+", metavar="RESULTS",
                    help="results.json files of --store postgres runs: their median goes into --merge-into's PostgreSQL section")
    ap.add_argument("--hocuspocus", nargs="+", metavar="RESULTS",
                    help="results.json files of --only hocuspocus runs: their median goes into --merge-into's Hocuspocus section")
    ap.add_argument("--cluster", nargs="+", metavar="RESULTS",
                    help="results.json files of --only cluster runs: their median goes into --merge-into's Cluster section")
    ap.add_argument("--webhooks", nargs="+", metavar="RESULTS",
                    help="results.json of --only webhooks: its rounds go into --merge-into's Webhook cost section")
    ap.add_argument("--scale", nargs="+", metavar="RESULTS",
                    help="results.json files of --only c100k,manyloaded runs: their median goes into --merge-into's Scale section")
    ap.add_argument("--merge-into", metavar="MD", help="with --hostile, --postgres, --hocuspocus or --cluster: the report to update; the rest of it is kept")
    args = ap.parse_args()
    if args.webhooks:
        if not args.merge_into:
            ap.error("--webhooks needs --merge-into")
        import report_webhooks
        report_webhooks.webhooks_main(args)
        return
    if args.scale:
        if not args.merge_into:
            ap.error("--scale needs --merge-into")
        import report_scale
        report_scale.scale_main(args)
        return
    if args.cluster:
        if not args.merge_into:
            ap.error("--cluster needs --merge-into")
        import report_cluster
        report_cluster.cluster_main(args)
        return
    if args.hocuspocus:
        if not args.merge_into:
            ap.error("--hocuspocus needs --merge-into")
        hocus_main(args)
        return
    if args.postgres:
        if not args.merge_into:
            ap.error("--postgres needs --merge-into")
        postgres_main(args)
        return
    if args.hostile:
        if not args.merge_into or not args.svg_dir:
            ap.error("--hostile needs --merge-into and --svg-dir")
        hostile_main(args)
        return
    if not args.results or not args.md or not args.svg_dir:
        ap.error("--results, --md and --svg-dir are needed (or --hostile, --postgres, --hocuspocus or --cluster, and --merge-into)")
    res = json.load(open(args.results))
    ver = json.load(open(args.versions)) if args.versions and os.path.exists(args.versions) else {}
    run = json.load(open(args.run)) if args.run and os.path.exists(args.run) else {}
    sc = res.get("scenarios", {})
    md_dir = os.path.dirname(os.path.abspath(args.md))
    svg_rel = os.path.relpath(os.path.abspath(args.svg_dir), md_dir)
    charts = []
    summary = []   # rows of the main table
    details = []   # markdown blocks
    verdicts = []  # (target, value, ok)

    # 1. fan-out
    fan = sc.get("fanout")
    if fan:
        ns = sorted({r["readers"] for r in fan})
        vals = []
        lines = ["### Fan-out: every trial", "",
                 "| server | readers | offered updates/s | delivered/s | p50 ms | p99 ms | max ms | missing | server CPU | gen CPU | other CPU | CPU pressure |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for n in ns:
            rows = {r["server"]: r for r in fan if r["readers"] == n}
            best = {s: (rows.get(s) or {}).get("best") or {} for s in SERVERS}
            d = {s: best[s].get("delivered_s") for s in SERVERS}
            lower = [LABEL[s] for s in SERVERS if (rows.get(s) or {}).get("lower_bound") and d[s] is not None]
            p99 = {s: (best[s].get("latency") or {}).get("p99_ms") for s in SERVERS}
            r_ref, r_relay = ratio(d["weft"], d["reference"]), ratio(d["weft"], d["relay"])
            ok = None if r_ref is None or r_relay is None else (r_ref >= TARGETS["fanout_ref"] and r_relay >= TARGETS["fanout_relay"])
            summary.append([f"fan-out, 1 writer → {n} readers", "delivered updates/s at p99 ≤ 50 ms (↑)",
                            d["weft"], d["reference"], d["relay"], r_ref, r_relay,
                            "≥ 5× ref, ≥ 0.60× relay", ok,
                            f"p99 at that rate: {fmt(p99['weft'])} / {fmt(p99['reference'])} / {fmt(p99['relay'])} ms"
                            + (f"; no rate failed for {', '.join(lower)}: a lower bound" if lower else "")])
            verdicts.append((f"fan-out N={n}: ≥ 5× reference and ≥ 60% of the null relay",
                             f"{fmt_ratio(r_ref)} reference, {fmt_ratio(r_relay)} relay", ok))
            vals.append([d[s] for s in SERVERS])
            for s in SERVERS:
                for t in (rows.get(s) or {}).get("trials", []):
                    lat = t.get("latency", {})
                    lines.append(f"| {LABEL[s]} | {n} | {fmt(t.get('offered_updates_s'))} | {fmt(t.get('delivered_s'))} | "
                                 f"{fmt(lat.get('p50_ms'))} | {fmt(lat.get('p99_ms'))} | {fmt(lat.get('max_ms'))} | "
                                 f"{fmt(t.get('missing'))} | {fmt(t.get('server_cpu'))} | {fmt(t.get('gen_cpu'))} | "
                                 f"{fmt(t.get('other_cpu'))} | {fmt(t.get('cpu_pressure'))} |")
        bar_chart(os.path.join(args.svg_dir, "fanout.svg"),
                  "Fan-out: highest delivered updates/s with p99 ≤ 50 ms", "delivered updates/s",
                  [f"{n} readers" for n in ns], SERVERS, vals, log=True)
        charts.append(("Fan-out", "fanout.svg"))
        details.append("\n".join(lines))

    # 2. many documents
    many = by_server(sc.get("manydocs"))
    if many:
        (w, rf, rl), first = each_server(many)
        name = f"many documents: {first['docs']:,} docs × {first['clients_per_doc']} clients × 1 edit/s"
        for key, label in (("p50_ms", "p50 latency ms (↓)"), ("p99_ms", "p99 latency ms (↓)"), ("max_ms", "max latency ms (↓)")):
            latency = lambda row, key=key: (row.get("latency") or {}).get(key)
            ok = None
            tgt = ""
            if key == "p99_ms":
                tgt = "≤ 5 ms"
                a = latency(w)
                ok = None if a is None else a <= TARGETS["many_p99_ms"]
                verdicts.append(("many documents: p99 ≤ 5 ms", f"{fmt(a)} ms", ok))
            summary.append(compared(name, label, (w, rf, rl), latency, tgt, ok))
        cpu = [x.get("server_cpu") for x in (w, rf, rl)]
        summary.append([name, "server CPU, share of one core (↓)", *cpu, ratio(cpu[0], cpu[1]), ratio(cpu[0], cpu[2]), "", None,
                        f"missing: {per_server((w, rf, rl), 'missing')}; "
                        f"other CPU: {per_server((w, rf, rl), 'other_cpu')} cores"])
        bar_chart(os.path.join(args.svg_dir, "manydocs.svg"), name + ": latency", "ms",
                  ["p50", "p99", "max"], SERVERS,
                  [[(many.get(s, {}).get("latency") or {}).get(k) for s in SERVERS] for k in ("p50_ms", "p99_ms", "max_ms")],
                  target=TARGETS["many_p99_ms"], target_label="target p99 5 ms", log=True)
        charts.append(("Many documents", "manydocs.svg"))

    # 3. idle connections
    idle = by_server(sc.get("idle"))
    if idle:
        (w, rf, rl), first = each_server(idle)
        name = f"idle: {first['connections']:,} connections over {first['docs']:,} docs"
        a = w.get("kib_per_connection")
        ok = None if a is None else a <= TARGETS["idle_kib_conn"]
        verdicts.append(("idle: ≤ 16 KiB RSS per connection", f"{fmt(a)} KiB", ok))
        rows = (w, rf, rl)
        summary.append(compared(name, "server RSS per connection, KiB (↓)", rows, "kib_per_connection", "≤ 16 KiB", ok))
        summary.append(compared(name, "server RSS per (empty) document, KiB (↓)", rows, "kib_per_document"))
        summary.append(compared(name, "server RSS with all connected, MiB (↓)", rows, "rss_all_mib",
                                note=f"idle CPU: {per_server(rows, 'idle_server_cpu')}"))
        bar_chart(os.path.join(args.svg_dir, "idle.svg"), name + ": server memory", "KiB",
                  ["per connection", "per document"], SERVERS,
                  [[idle.get(s, {}).get(k) for s in SERVERS] for k in ("kib_per_connection", "kib_per_document")],
                  target=TARGETS["idle_kib_conn"], target_label="target 16 KiB/connection")
        charts.append(("Idle connections", "idle.svg"))

    # 4. trace replay
    rep = by_server(sc.get("replay"))
    if rep:
        (w, rf, rl), first = each_server(rep)
        name = f"trace replay: {first['trace']}, {first['updates']:,} updates, {first['readers']} readers"
        speed = ratio(rf.get("seconds"), w.get("seconds"))
        ok = None if speed is None else speed >= TARGETS["replay_speedup"]
        verdicts.append(("trace replay: ≥ 3× faster than the reference", f"{fmt_ratio(speed)} faster", ok))
        rows = (w, rf, rl)
        summary.append(compared(name, "seconds until every reader holds endContent (↓)", rows, "seconds",
                                "≥ 3× faster than ref", ok,
                                f"reconnects: {per_server(rows, 'reconnects')}; "
                                f"server CPU {per_server(rows, 'server_cpu')}"))
        bar_chart(os.path.join(args.svg_dir, "replay.svg"), name, "seconds", ["time to endContent"], SERVERS,
                  [[rep.get(s, {}).get("seconds") for s in SERVERS]])
        charts.append(("Trace replay", "replay.svg"))

    # 5. cold load
    cold = by_server(sc.get("coldload"))
    if cold:
        w = cold.get("weft", {})
        rf = cold.get("reference", {})
        c = w.get("cold") or {}
        med = c.get("median_synced_ms")
        crash = (c.get("after_crash") or {}).get("synced_ms")
        rss = [r.get("doc_rss_kib") for r in c.get("runs", [])]
        ok = None if med is None else med <= TARGETS["cold_ms"]
        verdicts.append(("cold load ≤ 20 ms", f"{fmt(med)} ms (median), {fmt(crash)} ms after a crash", ok))
        summary.append(["cold load (trace document, weft restarted)", "connect → synced, ms, median (↓)", med, None, None, None, None,
                        "≤ 20 ms", ok,
                        f"max {fmt(c.get('max_synced_ms'))} ms over {len(c.get('runs', []))} restarts; after SIGKILL with a 500-update log: {fmt(crash)} ms"])
        summary.append(["cold load (trace document, weft restarted)", "RSS of the loaded document, KiB", sorted(rss)[len(rss) // 2] if rss else None,
                        None, None, None, None, "", None, "median over the restarts"])
        ww = (w.get("warm") or {}).get("synced_ms")
        rw = (rf.get("warm") or {}).get("synced_ms")
        summary.append(["warm sync (trace document in memory)", "connect → synced, ms (↓)", ww, rw, None, ratio(ww, rw), None, "", None,
                        "the reference keeps no documents on disk: only a warm sync compares"])
        bar_chart(os.path.join(args.svg_dir, "coldload.svg"), "Connect → synced, trace document", "ms",
                  ["cold, clean restart", "cold, after crash", "warm"], ["weft", "reference"],
                  [[med, None], [crash, None], [ww, rw]], target=TARGETS["cold_ms"], target_label="target 20 ms")
        charts.append(("Cold load", "coldload.svg"))

    # 6. durable writes
    dur = {r.get("mode"): r for r in sc.get("durable") or []}
    if dur:
        none = dur.get("none", {}).get("updates_s")
        for mode in ("sqlite-normal", "sqlite-full", "none"):
            r = dur.get(mode, {})
            ups = r.get("updates_s")
            cost = None if none in (None, 0) or ups is None or mode == "none" else 1 - ups / none
            ok = None
            tgt = ""
            if mode == "sqlite-normal":
                tgt = "≥ 50,000/s, ≤ 15% cost"
                ok = None if cost is None else (ups >= TARGETS["durable_ups"] and cost <= TARGETS["durable_cost"])
                verdicts.append(("durable writes (sync normal): ≥ 50,000 updates/s, ≤ 15% below storage none",
                                 f"{fmt(ups)}/s, {fmt(None if cost is None else cost * 100)}% below", ok))
            if mode == "sqlite-full":
                verdicts.append(("durable writes (sync full): ≥ 50,000 updates/s (same targets, for reference)",
                                 f"{fmt(ups)}/s, {fmt(None if cost is None else cost * 100)}% below", None if ups is None else ups >= TARGETS["durable_ups"]))
            lat = r.get("latency") or {}
            summary.append([f"durable writes, weft --{'storage none' if mode == 'none' else 'sync ' + mode.split('-')[1]}",
                            "updates/s stored and relayed (↑)", ups, None, None, None, None, tgt, ok,
                            f"{'' if cost is None else f'{cost * 100:.0f}% below storage none; '}p50 {fmt(lat.get('p50_ms'))} ms, p99 {fmt(lat.get('p99_ms'))} ms "
                            f"({r.get('docs')} docs × window {r.get('window')}); server CPU {fmt(r.get('server_cpu'))}, "
                            f"other CPU {fmt(r.get('other_cpu'))} cores"])
        bar_chart(os.path.join(args.svg_dir, "durable.svg"), "Durable writes: weft updates/s by storage setting", "updates/s",
                  ["weft"], ["sqlite-normal", "sqlite-full", "none"],
                  [[dur.get(m, {}).get("updates_s") for m in ("sqlite-normal", "sqlite-full", "none")]],
                  target=TARGETS["durable_ups"], target_label="target 50,000/s")
        charts.append(("Durable writes", "durable.svg"))

    # 7. join storm
    storm = sc.get("joinstorm")
    if storm:
        rows = by_server(storm.get("rows"))
        w, rf = rows.get("weft", {}), rows.get("reference", {})
        doc = storm.get("document") or {}
        name = f"join storm ({storm.get('clients')} clients within {fmt(storm.get('spread_s'))} s, {fmt((doc.get('bytes') or 0) / 1048576, 1)} MiB document)"
        last_w, last_r = w.get("last_synced_s"), rf.get("last_synced_s")
        peak_w, peak_r = w.get("peak_rss_mib"), rf.get("peak_rss_mib")
        ok_time = None if last_w is None or w.get("failed") else last_w <= 3.0
        ok_rss = None if peak_w is None else peak_w <= 512 and (peak_r is None or peak_w <= peak_r / 4)
        if not res.get("quick"):
            verdicts.append(("join storm: all synced in ≤ 3 s", f"{fmt(last_w)} s ({w.get('failed')} failed)", ok_time))
            verdicts.append(("join storm: peak RSS ≤ 512 MiB", f"{fmt(peak_w)} MiB", None if peak_w is None else peak_w <= 512))
            verdicts.append(("join storm: peak RSS ≤ 1/4 of the reference's in the same run",
                             f"{fmt(peak_w)} MiB, reference {fmt(peak_r)} MiB ({fmt_ratio(ratio(peak_w, peak_r))})",
                             None if peak_w is None or peak_r is None else peak_w <= peak_r / 4))
        summary.append([name, "first join → last synced, s (↓)", last_w, last_r, None, ratio(last_w, last_r), None, "≤ 3 s", ok_time,
                        f"failed: weft {w.get('failed')}, reference {rf.get('failed')}; load {storm.get('load')}"])
        summary.append([name, "server peak RSS during the storm, MiB (↓)", peak_w, peak_r, None, ratio(peak_w, peak_r), None,
                        "≤ 512 MiB, ≤ ¼ ref", ok_rss,
                        f"after seeding: weft {fmt(w.get('rss_seeded_mib'))}, reference {fmt(rf.get('rss_seeded_mib'))} MiB"])
        lines = ["### Join storm", "",
                 f"Document: {doc.get('how', '')} ({fmt(doc.get('bytes'))} bytes encoded).", "",
                 "| server | synced | failed | last synced s | per client p50 ms | p99 ms | max ms | server CPU s | RSS seeded MiB | peak RSS MiB | RSS after MiB | load |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for srv in ("weft", "reference"):
            r = rows.get(srv)
            if not r:
                continue
            lat = r.get("sync_s") or {}
            lines.append(f"| {LABEL.get(srv, srv)} | {r.get('synced')} | {r.get('failed')} | {fmt(r.get('last_synced_s'))} | "
                         f"{fmt(lat.get('p50_ms'))} | {fmt(lat.get('p99_ms'))} | {fmt(lat.get('max_ms'))} | {fmt(r.get('server_cpu_s'))} | "
                         f"{fmt(r.get('rss_seeded_mib'))} | {fmt(r.get('peak_rss_mib'))} | {fmt(r.get('rss_after_mib'))} | {r.get('load')} |")
        details.append("\n".join(lines))
        bar_chart(os.path.join(args.svg_dir, "joinstorm.svg"), "Join storm: server peak RSS", "MiB",
                  ["peak RSS"], ["weft", "reference"], [[peak_w, peak_r]], target=512, target_label="target 512 MiB")
        charts.append(("Join storm", "joinstorm.svg"))

    others = sorted(v for v in walk(sc, "other_cpu") if isinstance(v, (int, float)))
    pressures = sorted(v for v in walk(sc, "cpu_pressure") if isinstance(v, (int, float)))
    m = res.get("machine", {})
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = []
    out.append("# Benchmarks")
    out.append("")
    out.append("weft against what users run today, on one machine, in one run: the Node reference server "
               f"`@y/websocket-server` {ver.get('y_websocket_server', '?')} (yjs {ver.get('yjs', '?')}, ws {ver.get('ws', '?')}, "
               f"Node {ver.get('node', '?')}, no persistence) and a **null relay** (`weft-bench relay`: forwards frames to the "
               "room's other peers with no CRDT and no storage, the physical limit of this machine). weft runs with its "
               "defaults: `--storage sqlite --sync normal` (every update is committed before anyone sees it).")
    out.append("")
    out.append("This file is generated by `bench/compare.sh` (`bench/report.py`); do not edit it by hand.")
    out.append("")
    out.append("## Machine and run")
    out.append("")
    out.append(f"- generated {now}{' — **quick run, not for the record**' if res.get('quick') else ''}")
    out.append(f"- weft commit `{ver.get('weft_commit', '?')}`{' (with uncommitted changes)' if ver.get('weft_dirty') else ''}, {ver.get('rustc', '')}")
    out.append(f"- {m.get('nproc')} cores online ({m.get('cpus_online')}), CPU model: {m.get('cpu_model')}, "
               f"kernel {m.get('kernel')}, {fmt(m.get('mem_gib'))} GiB memory")
    out.append(f"- servers pinned with `taskset -c {res.get('server_cores') or '?'}`, the load generator with `taskset -c 1`; "
               "one server at a time, each started fresh per scenario")
    out.append(f"- whole run: {fmt(run.get('total_s'))} s (`{run.get('command', 'bench/compare.sh')}`), scenarios alone {fmt(res.get('elapsed_s'))} s")
    out.append("- the machine is shared with other work (builds, browser tests): absolute numbers are noisy; the ratios compare "
               "servers measured minutes apart in the same run. The load generator and the servers run at "
               f"nice {ver.get('nice', '?')}; a failing fan-out trial is repeated once. Two noise figures are recorded "
               "per measurement: *other CPU*, the cores other processes used meanwhile (`/proc/stat` minus the server "
               "and the load generator), and *CPU pressure* (`/proc/pressure/cpu`, share of the time some task waited "
               "for a CPU; it also counts a server's own threads queueing for its one core, so it is high under load "
               f"even on a quiet machine). 5-minute pressure average before the run: {ver.get('cpu_pressure_avg300_before', '?')}%")
    if others:
        busy = sum(1 for v in others if v >= 0.2)
        out.append(f"- other CPU over the {len(others)} measurements: median {fmt(others[len(others) // 2], 2)}, "
                   f"max {fmt(others[-1], 2)} cores; {busy} of them with ≥ 0.2 cores of other work")
    out.append("")
    out.append("## Commands")
    out.append("")
    out.append("```sh")
    out.append("bench/compare.sh            # full run (well under 20 minutes): rewrites this file and docs/bench/*.svg")
    out.append("bench/compare.sh --quick    # CI-sized run (< 2 minutes): report in target/bench-quick/")
    out.append("bench/compare.sh --only fanout,manydocs,idle,replay,coldload,durable,hostile,joinstorm,hocuspocus,cluster")
    out.append("# the load generator alone, against any y-websocket server:")
    out.append("target/release/weft-bench fanout --url ws://127.0.0.1:1234 --readers 32 [--rate 5000] [--pid PID]")
    out.append("target/release/weft-bench many-docs --url ws://127.0.0.1:1234 --docs 1000 --clients 4")
    out.append("target/release/weft-bench idle --url ws://127.0.0.1:1234 --pid PID --connections 10000 --docs 1000")
    out.append("target/release/weft-bench replay --url ws://127.0.0.1:1234 --trace tests/data/automerge-paper.json.gz")
    out.append("target/release/weft-bench durable --url ws://127.0.0.1:1234 --docs 8")
    out.append("target/release/weft-bench attack --url ws://127.0.0.1:1234 --doc 'doc?token=READ_TOKEN' --source-ip 127.0.0.2 --secs 20")
    out.append("target/release/weft-bench relay --addr 127.0.0.1:0")
    out.append("```")
    out.append("")
    out.append("## Results")
    out.append("")
    out.append("Ratios are weft ÷ other, of the metric as shown (↑: higher is better, ↓: lower is better).")
    out.append("")
    out.append("| scenario | metric | weft | reference | null relay | weft / ref | weft / relay | target | verdict | notes |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for row in summary:
        sc_name, metric, a, b, c, r1, r2, tgt, ok, notes = row
        out.append(f"| {sc_name} | {metric} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {fmt_ratio(r1)} | {fmt_ratio(r2)} | "
                   f"{tgt} | {verdict(ok) if tgt else ''} | {notes} |")
    out.append("")
    out.append("### Targets")
    out.append("")
    out.append("| target | measured | verdict |")
    out.append("| --- | --- | --- |")
    for tgt, value, ok in verdicts:
        out.append(f"| {tgt} | {value} | {verdict(ok)} |")
    out.append("")
    if sc.get("hostile"):
        h = dict(sc["hostile"])
        h["_source"] = "this run"
        command = f"{run.get('command', 'bench/compare.sh')}\n# the record: the median of three runs\n{HOSTILE_COMMAND}"
        out.extend(hostile_section([h], args.svg_dir, svg_rel, command, quick=res.get("quick")))
        out.append("")
    if sc.get("hocuspocus"):
        one = dict(res)
        one["_versions"] = ver
        command = f"{run.get('command', 'bench/compare.sh')}\n# the record: the median of three runs\n{HOCUS_COMMAND}"
        out.extend(hocus_section([one], command, quick=res.get("quick")))
        out.append("")
    if sc.get("cluster"):
        import report_cluster
        one = dict(res)
        one["_versions"] = ver
        command = f"{run.get('command', 'bench/compare.sh')}\n# the record: the median of three runs\n{report_cluster.CLUSTER_COMMAND}"
        out.extend(report_cluster.cluster_section([one], command, quick=res.get("quick")))
        out.append("")
    out.append("## Charts")
    out.append("")
    for title, f in charts:
        out.append(f"### {title}")
        out.append("")
        out.append(f"![{title}]({svg_rel}/{f})")
        out.append("")
    out.append("## How each scenario measures")
    out.append("")
    out.append(METHOD)
    out.append("")
    for block in details:
        out.append(block)
        out.append("")
    findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "FINDINGS.md")
    if os.path.exists(findings) and not res.get("quick"):
        out.append(open(findings).read().rstrip())
        out.append("")
    os.makedirs(md_dir, exist_ok=True)
    with open(args.md, "w") as f:
        f.write("\n".join(out))


METHOD = """\
- **Updates and latency.** Every generated update appends a 21-character text
  (`~` + 8 digits of sequence + 12 digits of microseconds) after the writer's
  previous character: a real Yjs v1 update of 32–35 bytes, hand-encoded so the
  writer costs almost nothing (a unit test checks yrs applies them). Readers
  find the timestamp in the update's bytes, so the same measurement works when
  a server relays bytes as received (weft, null relay) and when it re-encodes
  them (the reference). Latency is taken on the load generator's one clock.
  Updates that never arrive count as 10 s late.
- **Fan-out.** One document, one writer, N readers. The writer sends on a fixed
  schedule (open loop: an update's timestamp is when it was *due*, so a server
  that pushes back shows up as latency). Trials of 0.5 s warm-up + 2 s
  measured, each on a fresh document; the offered rate doubles until p99 > 50 ms
  (or an update is missing), then two geometric bisection steps. The figure is
  the highest delivered rate (updates received by all readers per second) of a
  passing trial.
- **Many documents.** Every client sends one update per second at its own phase
  and reads the other three clients' updates; 3 s warm-up, 20 s measured.
  Timestamps are taken when sent (the timer wakes up to 1 ms late). Server CPU is
  utime+stime from `/proc/PID/stat` over the measured span, as a share of one core.
- **Idle connections.** One connection per document first, then the rest spread
  over the same documents, each client synced and then silent. RSS (`VmRSS`)
  before, after the first step and after all: per connection = growth of the
  second step ÷ its connections; per document = growth of the first step ÷
  documents − per connection. Connections come from 127.0.0.1–4.
- **Trace replay.** The automerge-paper trace, one update per patch, generated
  with yrs before the clock starts; one writer sends them all as fast as TCP
  takes them; four readers apply every update to their own yrs document and stop
  when their text equals `endContent`. The time is from the first send to the
  last reader done. A reader a server disconnects reconnects and resyncs (counted).
- **Cold load.** After the replay weft is stopped with SIGTERM and restarted on
  the same database, then a fresh client connects: time from TCP connect to the
  server's step2 (y-websocket's `synced`); RSS growth of the server from the
  load. Once more after 500 more updates and SIGKILL (snapshot + log replay).
- **Durable writes.** 8 documents, each with one writer and one reader; a writer
  keeps at most 1,000 updates in flight (sent, not yet received by its reader).
  weft relays an update only after it is committed, so updates reaching readers
  per second = updates stored per second. Same with `--sync full` and with
  `--storage none`.
- **Join storm.** A document built from the automerge-paper trace (its whole
  editing history, typed by one client) and paragraphs of its text inserted
  at scattered places by a second client until it weighs 20 MiB encoded
  (2 MiB in `--quick`), stored through one client. Then 200 clients (50)
  connect, their starts spread evenly over one second; each is an empty
  y-websocket client on raw TCP that counts the server's step2 without
  holding it. The time is from the first join's start to the last client's
  step2 complete; peak RSS is the server's `VmHWM`, reset after seeding
  (`/proc/PID/clear_refs`), so it is the storm's."""


if __name__ == "__main__":
    main()
