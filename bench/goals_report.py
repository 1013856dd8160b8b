#!/usr/bin/env python3
"""Prints the tables of bench/README.md's "Issue 15" section from the JSON
that bench/goals.py wrote (default bench/results/goals.json)."""
import json
import os
import sys

path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "goals.json")
r = json.load(open(path))
cols = ["mapsyncd full", "mapsyncd unchanged", "before full", "before unchanged", "floor", "floor key order",
        "floor sorted", "seed", "seed durable"]
print("Run of %s to %s, source at %s, load average %s before, %s after.\n" % (
    r["started"], r.get("ended", "?"), r["commit"], " ".join("%.1f" % x for x in r["load_before"]),
    " ".join("%.1f" % x for x in r.get("load_after", []))))
print("| accounts | rounds | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 2) + "|")
for n, s in r["sizes"].items():
    m = s["median_s"]
    print("| %s | %d | " % (n, s["rounds"]) + " | ".join("%.3f" % m[c] for c in cols) + " |")
print()
print("| accounts | full --once / floor | full --once / floor key order | full --once / seed durable "
      "| before / floor | full cycle (ms, median) "
      "| one-alias cycle (ms, median) | one-alias / full | maps rendered after one alias | daemon VmHWM (KiB) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for n, s in r["sizes"].items():
    m, c = s["median_s"], s["cycles"]
    print("| %s | %.2f | %.2f | %.2f | %.2f | %d (%s) | %d (%s) | %.2f | %s | %s |" % (
        n, m["mapsyncd full"] / m["floor"], m["mapsyncd full"] / m["floor key order"],
        m["mapsyncd full"] / m["seed durable"], m["before full"] / m["floor"],
        c["full_median_ms"], ", ".join(map(str, c["full_ms"])), c["one_alias_median_ms"],
        ", ".join(map(str, c["one_alias_ms"])), c["one_alias_median_ms"] / c["full_median_ms"],
        ", ".join("%d of 4 (plan %d ms)" % tuple(p) for p in c["one_alias_planned"]), c["daemon_vmhwm_kib"]))
for n, s in r["sizes"].items():
    i = s["cycles"].get("idle")
    if i:
        print("\nIdle at %s accounts, the %d s from 2 s after the last commit: %d voluntary, %d involuntary "
              "context switches." % (n, i["seconds"], i["voluntary"], i["involuntary"]))
