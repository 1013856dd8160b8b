#!/bin/sh
# Peer of the benchmarks: the seed's sync script as the seed document
# (seed/postfix-dovecot-integration.md, "Sync Script") describes it, with
# nothing added: it "reads from the SQLite database, exports data to text
# files, reloads Postfix and Dovecot". The document gives no script text,
# so this is that description taken literally: one sqlite3 export per map,
# each a plain SELECT of the active rows of active domains straight into the
# map file (rewritten in place), the rows in whatever order SQLite yields
# them, nothing lower-cased, sorted, merged or checked; passwd as
# "email:bcrypt_hash". The postmap and reload commands are left out (no-ops
# in the benchmark, as mapsyncd's hooks are).
#
# Its files are not mapsyncd's (unsorted, aliases not merged, no quota
# field): it is the least an exporter of these tables does, the cost the
# issue 15 goals are measured against.
#
# usage: seed-export.sh [--durable] DATABASE OUTDIR
#   --durable   then `sync FILE...` (an fsync of each map), as mapsyncd
#               fsyncs what it writes
set -eu

durable=0
if [ "${1:-}" = "--durable" ]; then
        durable=1
        shift
fi
if [ $# -ne 2 ]; then
        echo "usage: $0 [--durable] DATABASE OUTDIR" >&2
        exit 2
fi
db=$1
out=$2
tab=$(printf '\t')

sqlite3 -readonly -separator "$tab" "$db" \
        "SELECT domain, 'OK' FROM domains WHERE active = 1" > "$out/virtual_domains"
sqlite3 -readonly -separator "$tab" "$db" \
        "SELECT a.email, d.domain || '/' || a.username || '/' FROM email_accounts a
         JOIN domains d ON d.id = a.domain_id WHERE a.active = 1 AND d.active = 1" > "$out/vmailbox"
sqlite3 -readonly -separator "$tab" "$db" \
        "SELECT al.source, al.destination FROM aliases al
         JOIN domains d ON d.id = al.domain_id WHERE al.active = 1 AND d.active = 1" > "$out/virtual_aliases"
sqlite3 -readonly -separator ":" "$db" \
        "SELECT a.email, a.password FROM email_accounts a
         JOIN domains d ON d.id = a.domain_id WHERE a.active = 1 AND d.active = 1" > "$out/passwd"

if [ "$durable" = 1 ]; then
        sync "$out/virtual_domains" "$out/vmailbox" "$out/virtual_aliases" "$out/passwd"
fi
