#!/bin/sh
# Peer (a) of the benchmarks: the cron script of the seed document
# (seed/postfix-dovecot-integration.md, "Sync Script"), rebuilt for the
# comparison. The sqlite3 CLI exports each table straight into its map file
# (rewritten in place, one sqlite3 process and so one transaction per map),
# then the services are "reloaded": the commands are no-ops here, as in the
# benchmark mapsyncd's hooks are.
#
# The four maps are those of conf/mapsyncd.conf, with the same filters
# (active rows of active domains, the address must end in "@<its domain>",
# a passwd value only for a 60-byte bcrypt text without ':' and an integer
# quota >= 0) and the same formats: keys lower-cased, rows sorted, the
# destinations of one alias joined by ", ", the first passwd row of a key
# kept. On a database without hostile rows (tools/gendb.py without
# --hostile) the files are byte for byte those mapsyncd writes; unlike
# mapsyncd it does not reject keys or values holding white space or
# control bytes.
#
# usage: sync-config.sh [--durable] DATABASE OUTDIR
#   --durable   then `sync FILE...` (fsync of each map file), as mapsyncd
#               fsyncs what it writes
#   SYNC_HOOK_LOG=FILE  each no-op hook appends its name to FILE (counting)
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

# The postmap and reload commands of the original, replaced by no-ops.
hook() {
        if [ -n "${SYNC_HOOK_LOG:-}" ]; then
                echo "$*" >>"$SYNC_HOOK_LOG"
        fi
}

export_map() { # FILE SEPARATOR SQL
        sqlite3 -readonly -batch -noheader -separator "$2" "$db" "$3" >"$1"
}

export_map "$out/virtual_domains" "$tab" "
SELECT lower(domain), 'OK' FROM domains WHERE active = 1
GROUP BY lower(domain) ORDER BY lower(domain);"

export_map "$out/vmailbox" "$tab" "
SELECT k, group_concat(v, ', ') FROM (
  SELECT DISTINCT lower(a.email) AS k,
    lower(d.domain || '/' || substr(a.email, 1, length(a.email) - length(d.domain) - 1) || '/') AS v
  FROM email_accounts AS a JOIN domains AS d ON d.id = a.domain_id
  WHERE a.active = 1 AND d.active = 1
    AND length(a.email) > length(d.domain) + 1
    AND lower(substr(a.email, -length(d.domain) - 1)) = '@' || lower(d.domain)
  ORDER BY k, v)
GROUP BY k ORDER BY k;"

export_map "$out/virtual_aliases" "$tab" "
SELECT k, group_concat(v, ', ') FROM (
  SELECT DISTINCT lower(al.source) AS k, al.destination AS v
  FROM aliases AS al JOIN domains AS d ON d.id = al.domain_id
  WHERE al.active = 1 AND d.active = 1 AND al.destination <> ''
    AND lower(substr(al.source, -length(d.domain) - 1)) = '@' || lower(d.domain)
  ORDER BY k, v)
GROUP BY k ORDER BY k;"

export_map "$out/passwd" ":" "
SELECT lower(a.email), min('{BLF-CRYPT}' || a.password || '::::::'
    || CASE WHEN a.quota > 0 THEN 'userdb_quota_rule=*:storage=' || a.quota || 'M' ELSE '' END)
  FROM email_accounts AS a JOIN domains AS d ON d.id = a.domain_id
  WHERE a.active = 1 AND d.active = 1
    AND typeof(a.password) = 'text' AND length(CAST(a.password AS BLOB)) = 60
    AND a.password GLOB '\$2[aby]\$[0-9][0-9]\$*' AND instr(a.password, ':') = 0
    AND typeof(a.quota) = 'integer' AND a.quota >= 0
  GROUP BY lower(a.email) ORDER BY lower(a.email);"

if [ "$durable" = 1 ]; then
        sync "$out/virtual_domains" "$out/vmailbox" "$out/virtual_aliases" "$out/passwd"
fi

hook postmap "lmdb:$out/virtual_domains"
hook postmap "lmdb:$out/vmailbox"
hook postmap "lmdb:$out/virtual_aliases"
hook postfix reload
hook doveadm reload
