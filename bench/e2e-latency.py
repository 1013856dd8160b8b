#!/usr/bin/env python3
"""End-to-end latency of mapsyncd (issue 4): how long from the COMMIT of an
admin-panel change until

  dovecot:  a private Dovecot accepts IMAP LOGIN with an account's new
            password (passwd-file rewritten by the daemon; no reload), and
  postfix:  a private Postfix instance accepts RCPT TO a newly added account
            (vmailbox rewritten, `postmap lmdb:` hook run; no reload).

mapsyncd runs as a daemon on conf/mapsyncd.conf with only its paths moved
into a temporary folder, the same setup as tests/e2e (whose helpers this
script imports). Each try commits one change and polls the consumer until
it agrees, from the COMMIT on, as a client retrying would; a thread notes
when the map file itself was replaced, which splits the total into
mapsyncd's part and the consumer's part. Dovecot tries start at evenly
spread fractions of a wall-clock second, because Dovecot looks at the
passwd-file at most once per second.

Run as root, with postfix, postfix-lmdb, dovecot-core and dovecot-imapd:
    MAPSYNCD=build/src/mapsyncd bench/e2e-latency.py [--tries 20] [--accounts 1000]
Prints p50/p90/min/max in milliseconds; --json FILE also writes them.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import e2elib as E  # noqa: E402


def summary(values):
    v = sorted(values)
    return {"n": len(v), "p50_ms": round(statistics.median(v) * 1000, 1),
            "p90_ms": round(v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))] * 1000, 1),
            "min_ms": round(v[0] * 1000, 1), "max_ms": round(v[-1] * 1000, 1)}


class Replaced(threading.Thread):
    """Notes when path is replaced (a new inode), while the main thread
    polls the consumer from the COMMIT on."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.ino, self.at = path, os.stat(path).st_ino, None
        self.start()

    def run(self):
        deadline = time.monotonic() + 30
        while self.at is None and time.monotonic() < deadline:
            if os.stat(self.path).st_ino != self.ino:
                self.at = time.monotonic()
            time.sleep(0.002)

    def since(self, t):
        self.join(31)
        E.check(self.at is not None, f"{self.path} was not rewritten within 30 s")
        return self.at - t


def bench_dovecot(args, gendb, db, dv, passwd):
    acc = gendb.ACTIVE_ACCOUNT
    total, file_part = [], []
    for i in range(args.tries):
        pw = gendb.ROTATE_PASSWORDS[i % 2]
        # Start at fraction i/tries of a second.
        time.sleep(1.0 + ((i / args.tries) - time.time() % 1.0) % 1.0)
        watch = Replaced(passwd)
        t = E.commit(db, [("UPDATE email_accounts SET password = ? WHERE email = ?", (gendb.HASH_OF[pw], acc))])
        ok, _ = E.wait_for(lambda: dv.imap_login(acc, pw), 30, 0.005)
        E.check(ok, f"try {i}: Dovecot never accepted the new password")
        done = time.monotonic() - t
        total.append(done)
        file_part.append(watch.since(t))
        E.log(f"  dovecot try {i + 1:2}: {1000 * done:7.1f} ms (passwd replaced after {1000 * file_part[-1]:.1f} ms)")
    return {"commit_to_imap_login": summary(total), "commit_to_passwd_replaced": summary(file_part)}


def bench_postfix(args, gendb, db, pf, vmailbox):
    did = E.domain_id(db, gendb.ACTIVE_DOMAIN)
    total, file_part = [], []
    for i in range(args.tries):
        addr = f"bench-{i:03d}@{gendb.ACTIVE_DOMAIN}"
        time.sleep(0.3)
        watch = Replaced(vmailbox)
        t = E.commit(db, [E.account_sql(did, addr, gendb.HASH_OF[gendb.ROTATE_PASSWORDS[0]])])
        ok, _ = E.wait_for(lambda: pf.rcpt(addr)[0] == 250, 30, 0.005)
        E.check(ok, f"try {i}: Postfix never accepted RCPT TO:<{addr}>")
        done = time.monotonic() - t
        total.append(done)
        file_part.append(watch.since(t))
        E.log(f"  postfix try {i + 1:2}: {1000 * done:7.1f} ms (vmailbox replaced after {1000 * file_part[-1]:.1f} ms)")
    return {"commit_to_smtp_rcpt_accepted": summary(total), "commit_to_vmailbox_replaced": summary(file_part)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--accounts", type=int, default=1000, help="accounts in the generated database")
    ap.add_argument("--mapsyncd", default=os.environ.get("MAPSYNCD"), help="the binary (default: $MAPSYNCD)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    if not args.mapsyncd:
        ap.error("name the binary with --mapsyncd or MAPSYNCD")
    os.environ["MAPSYNCD"] = os.path.abspath(args.mapsyncd)

    E.set_subreaper()
    E.preflight()
    lock = E.take_machine_lock()
    gendb = E.import_gendb()
    tmp = E.make_tmpdir()
    db_path = os.path.join(tmp, "db", "database.sqlite")
    E.generate_db(db_path, accounts=args.accounts, hostile=False)
    conf = E.Conf(tmp, db_path)
    db = E.connect(db_path)
    out = {m: conf.output(conf.postfix_map(m)) for m in E.POSTFIX_MAPS}
    passwd = conf.output(conf.passwd_map())
    m = re.search(r"^debounce_ms\s*=\s*(\d+)", conf.text, re.M)
    result = {"tries": args.tries, "accounts": args.accounts, "debounce_ms": int(m.group(1)) if m else None}
    with E.SystemPostfixConfig() as sysconf:
        daemon = E.Daemon(conf)
        dv = pf = None
        try:
            daemon.start()
            dv = E.Dovecot(tmp, passwd)
            dv.start()
            pf = E.Postfix(tmp, sysconf, out)
            pf.start()
            result["dovecot"] = bench_dovecot(args, gendb, db, dv, passwd)
            result["postfix"] = bench_postfix(args, gendb, db, pf, out["vmailbox"])
        finally:
            daemon.stop()
            if dv:
                dv.stop()
            if pf:
                pf.stop()
    E.reap_orphans()
    lock.close()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{args.tries} tries, {args.accounts} accounts, debounce_ms = {result['debounce_ms']}")
    print(f"{'measure':34} {'p50':>8} {'p90':>8} {'min':>8} {'max':>8}  (ms)")
    for svc in ("dovecot", "postfix"):
        for name, s in result[svc].items():
            print(f"{name:34} {s['p50_ms']:8.1f} {s['p90_ms']:8.1f} {s['min_ms']:8.1f} {s['max_ms']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
