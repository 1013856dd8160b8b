#!/usr/bin/env python3
"""Turns bench/bench.py's JSON into the Markdown tables of bench/README.md
and the plots (gnuplot, PNG) under a results directory.

usage: report.py RESULTS.json OUTDIR    -> OUTDIR/results.md, regen.png, latency.png
"""

import json
import os
import subprocess
import sys


def ms(s):
    return f"{s * 1000:.0f}" if s >= 0.1 else f"{s * 1000:.1f}"


def mib(kib):
    return f"{kib / 1024:.1f}"


def size(n):
    n = int(n)
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def nbytes(b):
    if b is None:
        return "-"
    if b >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    if b >= 1 << 10:
        return f"{b / 1024:.0f} KiB"
    return f"{b:.0f} B"


def ratio(x, y):
    return f"{x / y:.2f}" if y else "-"


LABEL = {
    "mapsyncd_full": "mapsyncd --once, full write (empty dir)",
    "mapsyncd_one": "mapsyncd --once, one row changed",
    "mapsyncd_same": "mapsyncd --once, nothing changed",
    "a": "(a) sync-config.sh",
    "a_durable": "(a) durable (`sync FILE...`)",
    "floor": "floor: the 4 queries, sqlite3 -> /dev/null",
}


def regen_tables(r, out):
    out.append("Wall time in ms (min / median / max over the runs); CPU (user + system, with "
               "children) and peak RSS (largest process) are medians. *vs durable (a)*, *vs (a)* and "
               "*vs floor* divide the median wall times of the same run. *written*: bytes the "
               "process and its children wrote (page cache, `/proc/PID/io` write_bytes less "
               "cancelled_write_bytes: map files, the database's `-shm`), median; *sort temp*: bytes "
               "written to SQLite's temporary sort files and deleted again before writeback "
               "(cancelled_write_bytes), median.\n")
    for n, x in r.items():
        runs = x["runs"]
        ad, a, fl = (runs[k]["wall"]["median"] for k in ("a_durable", "a", "floor"))
        reps = runs["a"]["wall"]["n"]
        mb = sum(x["map_bytes"].values())
        out.append(f"**{size(n)} accounts** ({reps} runs; the four maps: {nbytes(mb)}; "
                   f"files equal across tools: {'yes' if all(x['equal_to_reference'].values()) else 'NO'})\n")
        out.append("| tool | wall ms min / med / max | CPU ms | peak RSS MiB | written | sort temp | vs durable (a) | vs (a) | vs floor |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for k in ("mapsyncd_full", "mapsyncd_one", "mapsyncd_same", "a", "a_durable", "floor"):
            w = runs[k]["wall"]
            out.append(f"| {LABEL[k]} | {ms(w['min'])} / {ms(w['median'])} / {ms(w['max'])} | "
                       f"{ms(runs[k]['cpu']['median'])} | {mib(runs[k]['rss_kib']['median'])} | "
                       f"{nbytes(runs[k]['write_bytes']['median'])} | "
                       f"{nbytes(runs[k]['temp_bytes']['median']) if 'temp_bytes' in runs[k] else '-'} | "
                       f"{ratio(w['median'], ad)} | "
                       f"{ratio(w['median'], a)} | {ratio(w['median'], fl)} |")
        out.append("")


def noop_table(r, out):
    out.append("| accounts | who | runs per commit | time ms min / med / max | time vs (b) | CPU ms per commit | "
               "CPU vs (b) | written per commit | hooks run per commit |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for n, x in r.items():
        b = x["b"]
        for who, label in (("mapsyncd", "mapsyncd daemon"), ("b", "(b) inotifywait loop")):
            y = x[who]
            c = y["cycle_s"]
            out.append(f"| {size(n)} | {label} | {y['runs_per_commit']:.1f} | {ms(c['min'])} / {ms(c['median'])} / "
                       f"{ms(c['max'])} | {ratio(c['median'], b['cycle_s']['median'])} | "
                       f"{ms(y['cpu_per_commit_s'])} | {ratio(y['cpu_per_commit_s'], b['cpu_per_commit_s'])} | "
                       f"{nbytes(y['write_bytes_per_commit'])} | {y['hook_runs_per_commit']:.1f} |")
    out.append("")


def latency_table(r, out):
    out.append("| accounts | who | n | p50 ms | p99 ms | min ms | max ms | p50 vs (b) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for n, x in r.items():
        b = x["b"]["p50"]
        for who, label in (("mapsyncd_0", "mapsyncd, debounce 0"), ("mapsyncd_200", "mapsyncd, debounce 200 ms"),
                           ("b", "(b) inotifywait loop")):
            y = x[who]
            out.append(f"| {size(n)} | {label} | {y['n']} | {ms(y['p50'])} | {ms(y['p99'])} | {ms(y['min'])} | "
                       f"{ms(y['max'])} | {ratio(y['p50'], b)} |")
    out.append("| any | cron + (a), every minute | - | ~30,000 + run | ~60,000 + run | | | |")
    out.append("")


def burst_table(r, out):
    m, b = r["mapsyncd"], r["b"]
    out.append(f"{m['commits']:,} commits at {size(r['accounts'])} accounts, one every "
               f"{m['burst_s'] / m['commits'] * 1000:.1f} ms, alternately a password and an alias destination "
               f"(the burst took {m['burst_s']:.1f} s for mapsyncd, {b['burst_s']:.1f} s for (b)). "
               "Counted from the first commit until the maps were quiet for 3 s, or at most "
               f"{b['settle_s']:.0f} s after the burst.\n")
    out.append("| | mapsyncd (debounce 200, max_delay 2000) | (b) inotifywait loop | (b) / mapsyncd |")
    out.append("|---|---|---|---|")
    out.append(f"| sync cycles (runs of (a)) | {m['cycles']} | {b['cycles']} | {ratio(b['cycles'], m['cycles'])} |")
    out.append(f"| hook runs | {m['hook_runs']} | {b['hook_runs']} | {ratio(b['hook_runs'], m['hook_runs'])} |")
    out.append(f"| CPU s (with children) | {m['cpu_s']:.2f} | {b['cpu_s']:.2f} | {ratio(b['cpu_s'], m['cpu_s'])} |")
    out.append(f"| bytes written | {nbytes(m['write_bytes'])} | {nbytes(b['write_bytes'])} | "
               f"{ratio(b['write_bytes'], m['write_bytes'])} |")
    out.append(f"| quiet again after the burst | {'yes' if m['settled'] else 'no'}, {m['settle_s'] - 3:.1f} s "
               f"(+3 s of quiet) | {'yes' if b['settled'] else 'no'}, {b['settle_s']:.0f} s | |")
    bl = b.get("pipe_backlog_bytes")
    out.append(f"| events still queued at the end | - | {'-' if bl is None else f'{bl:,} bytes in the pipe, about {bl // 27:,} events'} | |")
    out.append(f"| final maps equal to the database | {'yes' if m['equal'] else 'NO'} | "
               f"{'yes' if b['equal'] else 'no'} | |")
    out.append("")


def idle_table(r, regen, out):
    m, b = r["mapsyncd"], r["b"]
    out.append(f"{m['seconds']} s with no change, {size(r['accounts'])} accounts; wakeups = voluntary + involuntary "
               "context switches of every thread and process.\n")
    out.append("| | CPU ms | wakeups | processes |")
    out.append("|---|---|---|---|")
    out.append(f"| mapsyncd daemon | {m['cpu_s'] * 1000:.0f} | {m['wakeups']} | {m['processes']} |")
    out.append(f"| (b) inotifywait loop | {b['cpu_s'] * 1000:.0f} | {b['wakeups']} | {b['processes']} |")
    x = (regen or {}).get(str(r["accounts"]))
    if x:
        c = x["runs"]["a"]["cpu"]["median"] * m["seconds"] / 60
        out.append(f"| cron + (a), once a minute | {c * 1000:.0f} (one run per minute, from the table above) | "
                   "at least one run a minute | 5 started a minute |")
    out.append("")


def plots(res, outdir):
    regen = res.get("regen")
    if regen:
        with open(os.path.join(outdir, "regen.dat"), "w") as f:
            f.write("# accounts, then median min max wall s of: mapsyncd_full mapsyncd_one mapsyncd_same a a_durable floor\n")
            for n, x in regen.items():
                cols = [n]
                for k in ("mapsyncd_full", "mapsyncd_one", "mapsyncd_same", "a", "a_durable", "floor"):
                    w = x["runs"][k]["wall"]
                    cols += [f"{w['median']:.5f}", f"{w['min']:.5f}", f"{w['max']:.5f}"]
                f.write(" ".join(cols) + "\n")
    lat = res.get("latency")
    if lat:
        for n, x in lat.items():
            for who, y in x.items():
                v = sorted(y["samples"])
                with open(os.path.join(outdir, f"latency-{n}-{who}.dat"), "w") as f:
                    for i, s in enumerate(v):
                        f.write(f"{s * 1000:.2f} {(i + 1) / len(v):.4f}\n")
    gp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plot.gp")
    sizes = " ".join(sorted((lat or {}).keys(), key=int))
    subprocess.run(["gnuplot", "-e", f"dir='{outdir}'; latsizes='{sizes}'; haveregen={1 if regen else 0}; "
                    f"havelat={1 if lat else 0}", gp], check=True)


def main():
    res = json.load(open(sys.argv[1]))
    outdir = sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    mach = res["machine"]
    out = [f"Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_mib'] // 1024} GiB, Linux {mach['kernel']}, "
           f"{mach['fs']}, sqlite3 {mach['sqlite3']}; load average before the run {' '.join(mach['load_before'])}; "
           f"{mach['date']}; source {mach.get('git', '?')}{'; QUICK mode' if res.get('quick') else ''}.\n"]
    if "regen" in res:
        out.append("### 1. Regeneration of the four maps\n")
        regen_tables(res["regen"], out)
    if "noop" in res:
        out.append("### 2. No-op cycle: a commit that changes no map (UPDATE of updated_at)\n")
        noop_table(res["noop"], out)
    if "latency" in res:
        out.append("### 3. Commit-to-file latency (COMMIT returned -> passwd holds the new hash)\n")
        latency_table(res["latency"], out)
    if "burst" in res:
        out.append("### 4. Burst\n")
        burst_table(res["burst"], out)
    if "idle" in res:
        out.append("### 5. Idle\n")
        idle_table(res["idle"], res.get("regen"), out)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write("\n".join(out))
    plots(res, outdir)
    print(os.path.join(outdir, "results.md"))


if __name__ == "__main__":
    main()
