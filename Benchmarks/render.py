#!/usr/bin/env python3
"""Renders the JSON lines of `keyroll-lab bench … --json` as the results table of docs/benchmarks.md.

    render.py RESULTS.jsonl docs/benchmarks.md

Replaces only what lies between the `<!-- results:begin -->` and `<!-- results:end -->` markers,
so the prose around the table (how to read each figure) is kept.
"""
import datetime, json, re, subprocess, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
doc_path = sys.argv[2]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()


def fmt(v):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"


lines = [f"Measured {datetime.date.today()} on {cores} cores ({cpu}), release build, by `Benchmarks/run.sh`.", "",
         "| figure | value | bound (same run) | ratio | command |", "|---|---|---|---|---|"]
for r in rows:
    ratio = f'{100 * r["value"] / r["bound"]:.1f} %' if r.get("bound") else "—"
    bound = f'{fmt(r["bound"])} ({r["boundName"]})' if r.get("bound") else "—"
    lines.append(f'| {r["name"]} | {fmt(r["value"])} {r["unit"]} | {bound} | {ratio} | `{r["command"]}` |')
table = "\n".join(lines)

doc = open(doc_path).read()
pattern = re.compile(r"(<!-- results:begin -->\n).*?(<!-- results:end -->)", re.S)
if not pattern.search(doc):
    sys.exit(f"{doc_path} has no <!-- results:begin --> / <!-- results:end --> markers")
open(doc_path, "w").write(pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), doc))
