#!/usr/bin/env python3
"""Checks weft's dependency rule by reading the crate paths in src/.

    http → session → doc → {weft-core, events → storage, broker}

and the leaf modules (auth, clock, close, config, event, metrics, name, rate)
import nothing but other leaves. A module may use any layer below its own,
never one above it or beside it, and the modules must not import each other
in a circle. `server` (the wiring) sits above everything; `main.rs` is the
binary and uses the library from outside, so it is not read.

What counts as an import: every `crate::<module>` in code (a `use` line, a
`use crate::{...}` group, a path written out in an expression), a `super::`
that climbs to the crate root, and `weft_core::`. Comments are skipped;
tests inside src/ are read like the rest.

    scripts/check-layers.py           report problems; exit 1 if any
    scripts/check-layers.py --graph   also print every edge and where it is

docs/ARCHITECTURE.md (section "Layers of weft") explains the rule.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Rank of each top-level module: a module may import lower ranks only.
# Leaves (0) may also import each other, as long as no circle forms.
LAYERS = {
    "server": 5,
    "http": 4,
    "session": 3,
    "doc": 2,
    "weft-core": 1,
    "storage": 1,
    "broker": 1,
    # Beside broker under doc, but above storage, whose outbox it reads.
    "events": 1.5,
    "auth": 0,
    "clock": 0,
    "close": 0,
    "config": 0,
    "event": 0,
    "metrics": 0,
    "name": 0,
    "rate": 0,
}
LAYER_NAMES = {5: "top", 4: "http", 3: "session", 2: "doc", 1.5: "events", 1: "weft-core/storage/broker", 0: "leaf"}

# lib.rs re-exports weft-core's modules under these names.
ALIASES = {"protocol": "weft-core", "fuzz": "weft-core"}

# Edges that break the rule today, each with the change that removes it:
# (from, to, name imported) -> why; only that name is allowed, not the whole
# edge. None today.
ALLOWED: dict[tuple[str, str, str], str] = {}


def module_path(path: Path) -> list[str]:
    """The module path of a source file: src/doc/restore/tree.rs -> [doc, restore, tree]."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return parts


def strip_comments(text: str) -> str:
    """Source without comments (// and doc comments, /* */ blocks) and
    without the content of string literals, so that neither a "//" in a
    string (a URL) nor a path written in a string or comment counts. Line
    breaks are kept, so offsets still give line numbers."""
    out, i, n = [], 0, len(text)
    while i < n:
        raw = re.match(r'b?r(#*)"', text[i : i + 130])
        if raw and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + raw.group(1), i + len(raw.group(0)))
            end = n if end < 0 else end + 1 + len(raw.group(1))
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("\n" * text.count("\n", i, end))
            i = end
        elif text[i] == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4]):
            # a char literal such as '"' must not open a string
            m = re.match(r"'(\\.|[^\\'])'", text[i : i + 4])
            out.append(m.group(0))
            i += len(m.group(0))
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def split_group(group: str) -> list[str]:
    """The items of a `{...}` use group (without its braces), split at its
    own commas, not at those of nested groups."""
    items, depth, item = [], 0, ""
    for c in group:
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += c
    return items + [item]


def flatten(tree: str) -> list[list[str]]:
    """The paths a use tree names: `doc::{DocName, x::Y}` -> [[doc, DocName], [doc, x, Y]]."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"((?:\w+::)*)(\{.*\}|\w+|\*)", tree)
    if not m:
        return []
    prefix = [p for p in m.group(1).split("::") if p]
    last = m.group(2)
    if last.startswith("{"):
        return [prefix + rest for item in split_group(last[1:-1]) for rest in flatten(item) or [[]]]
    return [prefix + [last]]


def imports(path: Path):
    """(target module, imported name, line number) for each reference from
    this file to a top-level module of the crate (its own included)."""
    here = module_path(path)
    code = strip_comments(path.read_text())

    def line_of(offset: int) -> int:
        return code.count("\n", 0, offset) + 1

    def tree_at(offset: int) -> str:
        """The use tree (or path) that starts at `offset`."""
        depth, j = 0, offset
        while j < len(code):
            c = code[j]
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif depth == 0 and not (c.isalnum() or c in "_:"):
                break
            j += 1
        return code[offset:j]

    found = []
    for m in re.finditer(r"\bcrate::", code):
        found += [(p, m.start()) for p in flatten(tree_at(m.end()))]
    for m in re.finditer(r"\b((?:super::)+)", code):
        if m.group(1).count("super::") == len(here):  # climbs to the crate root
            found += [(p, m.start()) for p in flatten(tree_at(m.end()))]
    for m in re.finditer(r"\bweft_core::", code):
        found += [(["weft-core"] + p, m.start()) for p in flatten(tree_at(m.end()))]
    for segments, offset in found:
        segments = [s for s in segments if s != "self"] or segments
        if segments:
            yield segments[0], segments[-1], line_of(offset)


def main() -> int:
    graph = "--graph" in sys.argv[1:]
    edges: dict[tuple[str, str], list[str]] = {}
    problems: list[str] = []
    # Imports that go up or beside the layers: (source, target, name) -> places
    upward: dict[tuple[str, str, str], list[str]] = {}

    for path in sorted(SRC.rglob("*.rs")):
        rel = path.relative_to(SRC.parent)
        parts = module_path(path)
        if not parts or parts == ["main"]:
            continue  # lib.rs (the root) and the binary
        source = parts[0]
        if source not in LAYERS:
            problems.append(f"{rel}: module `{source}` has no layer: add it to LAYERS in {sys.argv[0]}")
            continue
        lines = path.read_text().split("\n")
        for target, name, line in imports(path):
            target = ALIASES.get(target, target)
            if target == source:
                continue
            where = f"{rel}:{line}: {lines[line - 1].strip()}"
            if target not in LAYERS:
                problems.append(f"{where}\n    `{target}` has no layer: add it to LAYERS")
                continue
            places = edges.setdefault((source, target), [])
            if where not in places:
                places.append(where)
            if LAYERS[target] > LAYERS[source] or LAYERS[target] == LAYERS[source] > 0:
                places = upward.setdefault((source, target, name), [])
                if where not in places:
                    places.append(where)

    adjacency: dict[str, set[str]] = {}
    for a, b in edges:
        adjacency.setdefault(a, set()).add(b)

    # Going down the ranks alone cannot close a circle: every circle takes
    # an upward import, or runs among the leaves.
    for (source, target, name), places in sorted(upward.items()):
        circle = path_back(adjacency, target, source)
        closes = f"\n    closes the circle {' → '.join([source] + circle)}" if circle else ""
        reason = ALLOWED.get((source, target, name))
        if reason:
            print(f"allowed for now: {source} → {target} ({name}) in {len(places)} place(s): {reason}{closes}")
            for where in places:
                print(f"    {where}")
            continue
        kind = "beside" if LAYERS[target] == LAYERS[source] else "up"
        for where in places:
            problems.append(
                f"{where}\n    {source} ({LAYER_NAMES[LAYERS[source]]}) imports {name or target} from "
                f"{target} ({LAYER_NAMES[LAYERS[target]]}): an import {kind} the layers{closes}"
            )
    leaves = {m for m, rank in LAYERS.items() if rank == 0}
    for leaf in sorted(leaves):
        circle = path_back({a: bs & leaves for a, bs in adjacency.items() if a in leaves}, leaf, leaf, True)
        if circle and min(circle) == leaf:
            problems.append(f"circle among the leaves: {' → '.join(circle)}")
    for key in sorted(set(ALLOWED) - set(upward)):
        print(f"allow-list entry no longer needed, delete it: {key[0]} → {key[1]} ({key[2]})")

    if graph:
        for (a, b), places in sorted(edges.items()):
            print(f"{a} → {b}")
            for where in places:
                print(f"    {where}")

    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(
            f"\n{len(problems)} problem(s): the rule is http → session → doc → {{weft-core, events → storage, broker}}, "
            "leaves import only leaves (docs/ARCHITECTURE.md)"
        )
        return 1
    print("layers: ok (http → session → doc → {weft-core, events → storage, broker}; leaves import only leaves)")
    return 0


def path_back(adjacency: dict[str, set[str]], start: str, goal: str, leave_first: bool = False) -> list[str]:
    """The shortest path of imports from `start` to `goal`, as the modules
    after `start` ([] when there is none). With `leave_first`, `start` itself
    only counts as the goal after at least one step."""
    queue, seen = [(start, [start])], {start} if not leave_first else set()
    if start == goal and not leave_first:
        return [start]
    while queue:
        node, path = queue.pop(0)
        for nxt in sorted(adjacency.get(node, ())):
            if nxt == goal:
                return path + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, path + [nxt]))
    return []


if __name__ == "__main__":
    sys.exit(main())
