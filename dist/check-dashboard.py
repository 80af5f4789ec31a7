#!/usr/bin/env python3
"""Print every metric name the Grafana dashboard's PromQL references.

Usage: check-dashboard.py [DASHBOARD_JSON]   (default: grafana-dashboard.json
next to this script)

Reads every panel target's `expr` (rows' nested panels included) and every
templating variable query (`label_values(METRIC{...}, label)` counts as a
reference to METRIC), and prints the metric names, sorted, one per line.
Histogram series are reported under the histogram's name: `_bucket` is always
stripped, and `_sum` / `_count` are stripped when the same base name is also
used with `_bucket`, so that a gauge such as chihaya_storage_infohashes_count
keeps its name.

Only the standard library is used; the parser is small and handles the PromQL
a dashboard uses (selectors, ranges, functions, aggregations with by/without,
binary operators with on/ignoring/group_left/group_right, offset, Grafana
variables). It exits with status 1 if the file holds no expr at all.
"""

import json
import os
import re
import sys

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "inf", "nan",
}
IDENT = r"[A-Za-z_:][A-Za-z0-9_:]*"


def exprs_of(dashboard):
    """Yield every PromQL expression in the dashboard."""

    def panels(items):
        for p in items or []:
            yield p
            yield from panels(p.get("panels"))

    for p in panels(dashboard.get("panels")):
        for t in p.get("targets") or []:
            if isinstance(t, dict) and t.get("expr"):
                yield t["expr"]
    for v in (dashboard.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if not q:
            continue
        m = re.fullmatch(r"\s*label_values\s*\((.*),\s*" + IDENT + r"\s*\)\s*", q, re.S)
        if m:
            yield m.group(1)
            continue
        m = re.fullmatch(r"\s*(?:query_result|label_values)\s*\((.*)\)\s*", q, re.S)
        if m:
            yield m.group(1)
        elif not re.fullmatch(r"\s*(?:label_names|metrics)\s*\(.*\)\s*", q, re.S):
            yield q


def names_in(expr):
    """The metric names one PromQL expression selects."""
    s = expr
    # Grafana variables: ${var}, ${var:fmt}, [[var]], $var, $__interval.
    s = re.sub(r"\$\{[^}]*\}|\[\[[^\]]*\]\]|\$" + IDENT, " ", s)
    # String literals, then label matchers and range / subquery brackets.
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', s)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    # offset / @ modifiers and their durations or timestamps.
    s = re.sub(r"\boffset\s+-?[0-9A-Za-z_.]+", " ", s)
    s = re.sub(r"@\s*(?:start\s*\(\s*\)|end\s*\(\s*\)|[0-9.eE+-]+)", " ", s)
    # Label lists of by / without / on / ignoring / group_left / group_right.
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)
    # Numbers (including hex and exponents), so "1e3" yields no "e3".
    s = re.sub(r"(?<![A-Za-z0-9_:])(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)", " ", s)
    found = set()
    for m in re.finditer(IDENT, s):
        word = m.group(0)
        rest = s[m.end():]
        if word.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", rest):  # a function or an aggregation
            continue
        found.add(word)
    return found


def metric_names(dashboard):
    raw = set()
    count = 0
    for e in exprs_of(dashboard):
        count += 1
        raw |= names_in(e)
    bases = {n[: -len("_bucket")] for n in raw if n.endswith("_bucket")}
    out = set()
    for n in raw:
        for suffix in ("_bucket", "_sum", "_count"):
            base = n[: -len(suffix)]
            if n.endswith(suffix) and (suffix == "_bucket" or base in bases):
                n = base
                break
        out.add(n)
    return count, sorted(out)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "grafana-dashboard.json")
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    count, names = metric_names(dashboard)
    if count == 0:
        print("no expr found in %s" % path, file=sys.stderr)
        return 1
    for n in names:
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
