#!/bin/sh
# Peer (b) of the benchmarks: the hand-made alternative to mapsyncd's
# watching, an `inotifywait -m` loop on the database's directory that runs
# peer (a), bench/sync-config.sh, on every event of the database, its -wal
# or its -journal (the names mapsyncd watches too; other files of the
# directory, such as -shm, are ignored, or the loop would trigger itself).
#
# usage: inotify-loop.sh [--durable] DATABASE OUTDIR
#   SYNC_EVENT_LOG=FILE  each event read appends a line to FILE (counting)
#   SYNC_HOOK_LOG=FILE   passed on to sync-config.sh (counting hook runs)
# Runs until killed; stderr says "Watches established." once it watches.
set -eu

durable=
if [ "${1:-}" = "--durable" ]; then
        durable=--durable
        shift
fi
if [ $# -ne 2 ]; then
        echo "usage: $0 [--durable] DATABASE OUTDIR" >&2
        exit 2
fi
db=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
dir=$(dirname "$db")
base=$(basename "$db")

inotifywait -m -e modify,create,moved_to,delete --format '%f %e' "$dir" |
        while IFS=' ' read -r name events; do
                case "$name" in
                "$base" | "$base-wal" | "$base-journal") ;;
                *) continue ;;
                esac
                if [ -n "${SYNC_EVENT_LOG:-}" ]; then
                        echo "$name $events" >>"$SYNC_EVENT_LOG"
                fi
                "$here/sync-config.sh" $durable "$db" "$out" || echo "sync-config.sh failed" >&2
        done
