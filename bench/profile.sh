#!/bin/sh
# Where mapsyncd's time goes in one sync of N accounts (default 100,000):
#   1. callgrind (instruction counts, reproducible on a busy machine) of
#      `mapsyncd --once` with nothing to change: every map rendered, sorted,
#      validated, hashed and compared, nothing written;
#   2. the same with SQLite's memory statistics off (bench/profile/
#      memstatus-off.c, LD_PRELOAD), and the native wall/CPU of both;
#   3. strace -c of a full write (empty directory): fsync and friends;
#   4. mapsyncd's four wrapped queries run by the sqlite3 CLI into
#      /dev/null, with and without their ORDER BY: what SQLite's sorter costs;
#   5. OpenSSL's SHA-256 speed: what hashing costs natively (SHA-NI), as
#      valgrind's CPU has no SHA extensions and overstates it.
# usage: bench/profile.sh [ACCOUNTS]   -> bench/work/profile-N/ and its report.txt
# Needs valgrind, strace, hyperfine besides bench/run.sh's tools.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100000}
w=$root/bench/work/profile-$n
rm -rf "$w"
mkdir -p "$w/out" "$w/state"
rep=$w/report.txt

build=$root/bench/work/build-prof     # -O2 -g: callgrind names mapsyncd's functions
if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" "$root" --buildtype=debugoptimized -Dman=false -Dsystemd_units=false -Dtests=false >/dev/null
fi
ninja -C "$build" >/dev/null
bin=$build/src/mapsyncd
shim=$w/memstatus-off.so
cc -O2 -shared -fPIC -o "$shim" "$root/bench/profile/memstatus-off.c" -lsqlite3

db=$root/bench/work/db/a$n.sqlite
[ -f "$db" ] || "$root/tools/gendb.py" --accounts "$n" --force "$db" >/dev/null
cp "$db" "$w/database.sqlite"
db=$w/database.sqlite
conf=$w/mapsyncd.conf
ROOT=$root python3 -c "
import sys, os
sys.path.insert(0, os.path.join(os.environ['ROOT'], 'bench'))
import bench
bench.make_config(*sys.argv[1:])
" "$conf" "$db" "$w/out" "$w/state"

exec >"$rep"
echo "# profile of mapsyncd --once, $n accounts ($(date '+%Y-%m-%d %H:%M'); $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-))"
"$bin" --once -c "$conf" 2>/dev/null   # maps in place

echo
echo "## 1. callgrind: --once, nothing changed"
cd "$w"
valgrind --tool=callgrind --callgrind-out-file="$w/cg.same" "$bin" --once -c "$conf" 2>"$w/cg.same.err"
grep "Collected" "$w/cg.same.err"
echo "### inclusive"
callgrind_annotate --inclusive=yes "$w/cg.same" 2>/dev/null | grep -E "Ir|%\)" |
        grep -E "PROGRAM TOTALS|render_map|db_query_next|sqlite3_step|sqlite3VdbeSorter|render_row|render_check_row|set_buf|output_write|flush|SHA256_Update|matches_old|sqlite3Malloc |sqlite3_free |sqlite3_mutex_enter|sqlite3_mutex_leave|pthread_mutex|sqlite3StatusUp|sqlite3StatusDown|sqlite3VdbeMemGrow|sqlite3VdbeMemSetStr|sqlite3_result_text " |
        head -40
echo "### self (top 25)"
callgrind_annotate "$w/cg.same" 2>/dev/null | grep -E "%\)" | sed -n 2,26p

echo
echo "## 2. SQLite memory statistics off (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) via LD_PRELOAD)"
LD_PRELOAD=$shim valgrind --tool=callgrind --callgrind-out-file="$w/cg.same.off" "$bin" --once -c "$conf" 2>"$w/cg.off.err"
grep "Collected" "$w/cg.off.err"
callgrind_annotate "$w/cg.same.off" 2>/dev/null | grep -E "PROGRAM TOTALS|pthread_mutex|sqlite3_mutex|sqlite3Status" | head
echo "### native, release build, nothing changed"
rel=${BENCH_BUILD:-$root/bench/work/build}/src/mapsyncd
[ -x "$rel" ] || rel=$bin
hyperfine -N --warmup 1 --runs 10 --style none --export-markdown "$w/hyperfine.md" \
        -n "memstatus on (as built)" "$rel --once -c $conf" \
        -n "memstatus off (LD_PRELOAD)" "env LD_PRELOAD=$shim $rel --once -c $conf" >/dev/null 2>&1 || true
cat "$w/hyperfine.md" 2>/dev/null || true

echo
echo "## 3. strace -c -w of a full write (the four maps removed first)"
rm -f "$w/out/"*
strace -f -c -w -o "$w/strace.txt" "$rel" --once -c "$conf" 2>/dev/null
head -14 "$w/strace.txt"

echo
echo "## 4. mapsyncd's wrapped queries by the sqlite3 CLI into /dev/null (best of 3, s)"
echo "sorted: as mapsyncd runs them (ORDER BY lower(k), v); by k: ORDER BY k, v (binary, no lower());"
echo "none: no ORDER BY. Plans for sorted and by k."
python3 - "$conf" "$db" <<'EOF'
import configparser, subprocess, sys, time
c = configparser.ConfigParser(interpolation=None, strict=False, inline_comment_prefixes=None)
c.read(sys.argv[1])
db = sys.argv[2]
orders = {"sorted": " ORDER BY lower(k) COLLATE BINARY, v COLLATE BINARY",
          "by k": " ORDER BY k COLLATE BINARY, v COLLATE BINARY", "none": ""}
print("| map | sorted | by k | none | plan sorted | plan by k |")
print("|---|---|---|---|---|---|")
for sec in c.sections():
    if not sec.startswith("map "):
        continue
    q = " ".join(c[sec]["query"].split())
    base = f"WITH mapsyncd_q(k, v) AS ({q}) SELECT k, v FROM mapsyncd_q"
    t, plan = {}, {}
    for name, o in orders.items():
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(["sqlite3", "-readonly", db, base + o + ";"], stdout=subprocess.DEVNULL, check=True)
            d = time.perf_counter() - t0
            best = d if best is None else min(best, d)
        t[name] = best
        p = subprocess.run(["sqlite3", "-readonly", db, "EXPLAIN QUERY PLAN " + base + o + ";"],
                           capture_output=True, text=True).stdout
        plan[name] = "; ".join(l.strip("|-` ") for l in p.splitlines()[1:])
    print(f"| {sec[4:]} | {t['sorted']:.3f} | {t['by k']:.3f} | {t['none']:.3f} | {plan['sorted']} | {plan['by k']} |")
EOF
echo
echo "## 5. hashing natively: OpenSSL's SHA-256 (EVP, as mapsyncd calls it) on 128 KiB blocks"
openssl speed -evp sha256 -bytes 131072 -seconds 2 2>/dev/null | tail -1
echo "bytes of the four maps: $(cat "$w/out/"* | wc -c)"
