#!/usr/bin/env python3
"""Renders the JSON lines of `keyroll bench … --json` as the table in docs/benchmarks.md."""
import json, platform, subprocess, sys, datetime

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()


def fmt(v):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.4f}"


print("# Benchmarks\n")
print(f"Measured {datetime.date.today()} on {cores} cores ({cpu}), release build, by `Benchmarks/run.sh`.")
print("Every figure stands next to a bound measured in the same run on the same machine, and its ratio to it.\n")
print("| figure | value | bound | ratio | command |")
print("|---|---|---|---|---|")
for r in rows:
    ratio = f'{100 * r["value"] / r["bound"]:.1f} %' if r.get("bound") else "—"
    bound = f'{fmt(r["bound"])} ({r["boundName"]})' if r.get("bound") else "—"
    print(f'| {r["name"]} | {fmt(r["value"])} {r["unit"]} | {bound} | {ratio} | `{r["command"]}` |')
