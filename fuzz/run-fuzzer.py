#!/usr/bin/env python3
"""Runs one libFuzzer target for a while from its committed seed corpus and
prints what it did: executions, coverage, corpus size.

    run-fuzzer.py FUZZER SEED_DIR [--dict FILE] [--seconds N] [--keep DIR]

The fuzzer reads SEED_DIR but writes new inputs only to a temporary
directory (or to --keep DIR, to look at or to add to the seeds). --seconds
defaults to $FUZZ_SECONDS or 60. A crash, leak or failed property leaves
its input as fuzz-artifacts/NAME-crash-... in the current directory and
fails the run (exit status 1)."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("fuzzer")
    p.add_argument("seeds")
    p.add_argument("--dict")
    p.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")))
    p.add_argument("--keep", help="directory for the new corpus entries")
    p.add_argument("--jobs", type=int, default=1)
    a = p.parse_args()

    name = os.path.basename(a.fuzzer)
    work = a.keep or tempfile.mkdtemp(prefix=name + "-corpus-")
    os.makedirs(work, exist_ok=True)
    artifacts = os.path.abspath("fuzz-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    cmd = [a.fuzzer, "-max_total_time=%d" % a.seconds, "-print_final_stats=1", "-timeout=10",
           "-rss_limit_mb=2048", "-artifact_prefix=%s/%s-" % (artifacts, name)]
    if a.dict:
        cmd.append("-dict=" + a.dict)
    if a.jobs > 1:
        cmd += ["-fork=%d" % a.jobs]
    cmd += [work, a.seeds]
    print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    err = r.stderr
    tail = "\n".join(err.splitlines()[-60:])
    stats = dict(re.findall(r"^stat::(\w+):\s*(\d+)", err, re.M))
    last = [line for line in err.splitlines() if re.match(r"#\d+\s+(DONE|NEW|REDUCE|pulse|INITED)", line)]
    cov = re.search(r"cov: (\d+) ft: (\d+)(?: corp: (\d+)/(\S+))?", last[-1]) if last else None
    done = ("in %d s" % a.seconds if r.returncode == 0 else
            "before it STOPPED (exit status %d): a crash, leak or failed property" % r.returncode)
    print("%s: %s executions %s (%s/s), cov %s, ft %s, corpus %s (%s)"
          % (name, stats.get("number_of_executed_units", "?"), done,
             stats.get("average_exec_per_sec", "?"), cov.group(1) if cov else "?", cov.group(2) if cov else "?",
             cov.group(3) if cov and cov.group(3) else "?", cov.group(4) if cov and cov.group(4) else "?"))
    if r.returncode != 0:
        print(tail)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
