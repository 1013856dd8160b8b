#!/bin/sh
# Runs every benchmark of bench/README.md: builds a release mapsyncd,
# generates the databases (tools/gendb.py, kept in bench/work/db/), measures
# mapsyncd and the peers side by side (bench/bench.py) and writes the tables
# and plots (bench/report.py, gnuplot).
#
# usage: bench/run.sh [--quick] [--parts regen,noop,latency,burst,idle]
#   --quick   1k and 10k accounts, fewer runs, shorter waits (about 3 min);
#             results in bench/work/results-quick/
#   default   1k, 10k, 100k and 1M accounts (about 25 min on 2 cores);
#             results in bench/results/ (results.json, results.md, *.png)
#   --parts   only these parts, merged into the existing results.json
# Needs: meson, ninja, gcc and mapsyncd's build dependencies, python3,
# sqlite3, inotify-tools, gnuplot-nox, time (Debian packages).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
quick=
parts=
while [ $# -gt 0 ]; do
        case "$1" in
        --quick) quick=--quick ;;
        --parts) parts=$2; shift ;;
        *) echo "usage: $0 [--quick] [--parts LIST]" >&2; exit 2 ;;
        esac
        shift
done

missing=
for tool in meson ninja python3 sqlite3 inotifywait gnuplot /usr/bin/time; do
        command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
        echo "missing:$missing (apt-get install meson ninja-build python3 sqlite3 inotify-tools gnuplot-nox time)" >&2
        exit 1
fi

build=${BENCH_BUILD:-$root/bench/work/build}
if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" "$root" --buildtype=release -Dman=false -Dsystemd_units=false -Dtests=false >/dev/null
fi
ninja -C "$build" >/dev/null

if [ -n "$quick" ]; then
        results=$root/bench/work/results-quick
else
        results=$root/bench/results
fi
mkdir -p "$results"
if [ -z "$parts" ]; then
        rm -f "$results/results.json"
        parts=regen,noop,latency,burst,idle
fi

echo "nproc $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
echo "uptime: $(uptime)"
python3 "$root/bench/bench.py" $quick --mapsyncd "$build/src/mapsyncd" --work "$root/bench/work" \
        --json "$results/results.json" --parts "$parts"
python3 "$root/bench/report.py" "$results/results.json" "$results"
