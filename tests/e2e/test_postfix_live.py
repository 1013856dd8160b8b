#!/usr/bin/env python3
"""Live proof for Postfix: mapsyncd runs as a daemon on the shipped config
(paths moved into a temporary folder, the same `postmap lmdb:` hooks) while
a private Postfix instance (own config, queue and data directories, smtpd on
a free loopback port, virtual delivery into a temporary mailbox base) reads
the three lmdb tables. An account added through the database is accepted by
SMTP (python3 smtplib) within 2 s of the COMMIT and its mail lands in its
Maildir; so does mail to a new alias; a removed account is rejected at RCPT
TO. No postfix reload. The database is in rollback-journal mode here."""

import os
import sys
import time
import uuid

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib as E  # noqa: E402

NEW_ACCOUNT = "live-new@d0001.example"
NEW_ALIAS = "live-alias@d0001.example"
NEW_DOMAIN = "live-domain.example"
NEW_DOMAIN_ACCOUNT = "someone@live-domain.example"


def test(checks, tmp):
    gendb = E.import_gendb()
    E.check(gendb is not None, f"{E.TOOLS}/gendb.py is missing")
    db_path = os.path.join(tmp, "db", "database.sqlite")
    # Laravel leaves SQLite in its default rollback-journal mode (the
    # Dovecot live test runs in WAL mode): a commit then rewrites the
    # database file itself.
    E.generate_db(db_path, accounts=50, hostile=False, journal="delete")
    conf = E.Conf(tmp, db_path)
    out = {m: conf.output(conf.postfix_map(m)) for m in E.POSTFIX_MAPS}
    db = E.connect(db_path)

    with E.SystemPostfixConfig() as sysconf:
        daemon = E.Daemon(conf)
        pf = None
        try:
            daemon.start()
            for m, path in out.items():
                E.check(os.path.exists(path + ".lmdb"), f"the daemon's first sync built no {path}.lmdb")
            pf = E.Postfix(tmp, sysconf, out)
            rc, said = pf.check()
            E.check(rc == 0, f"postfix -c {pf.config_dir} check exited {rc}:\n{said}")
            pf.start()
            master = pf.master_pid()
            live_checks(checks, gendb, db, pf, daemon)

            def no_reload():
                E.check(pf.master_pid() == master,
                        f"Postfix's master pid changed from {master} to {pf.master_pid()}")
                said = [ln for ln in pf.maillog_text().splitlines() if "reload" in ln]
                E.check(not said, "Postfix was reloaded:\n" + "\n".join(said))
            checks.run("no postfix reload happened", no_reload)

            def clean_log():
                bad = [ln for ln in pf.maillog_text().splitlines()
                       if any(w in ln for w in ("warning:", "fatal:", "panic:", "error:"))]
                E.check(not bad, "Postfix logged:\n" + "\n".join(bad[:30]))
            checks.run("Postfix logged no warning or error", clean_log)
            checks.expect("mapsyncd still runs", daemon.alive(),
                          f"mapsyncd exited with status {daemon.proc.returncode}")
        finally:
            status = daemon.stop()
            if pf:
                pf.stop()
            E.log(f"mapsyncd stopped (exit status {status}); its log:\n{daemon.log()}")
            if pf:
                E.log(f"Postfix maillog:\n{pf.maillog_text()[-6000:]}")


def live_checks(checks, gendb, db, pf, daemon):
    def accepted(addr):
        code, msg = pf.rcpt(addr)
        return code == 250

    def rejected(addr):
        code, msg = pf.rcpt(addr)
        return 500 <= code < 600

    def reaches(pred, since, what):
        ok, _ = E.wait_for(pred, 10, 0.02)
        took = time.monotonic() - since
        E.check(ok, f"{what}: not after {took:.1f} s (limit {E.LATENCY_LIMIT_S} s);"
                f" mapsyncd log:\n{daemon.log()[-3000:]}")
        E.check(took <= E.LATENCY_LIMIT_S, f"{what}: took {took:.2f} s, over the {E.LATENCY_LIMIT_S} s limit")
        E.log(f"     {what}: {took:.2f} s after COMMIT")

    def delivered(addr, mailbox):
        token = "e2e-" + uuid.uuid4().hex
        pf.send(addr, token)
        ok, waited = E.wait_for(lambda: pf.maildir_has(mailbox, token), 60, 0.1)
        E.check(ok, f"mail to {addr} did not reach {pf.vmail}/{mailbox}new/ in {waited:.0f} s;"
                f" maillog:\n{pf.maillog_text()[-3000:]}")
        E.log(f"     mail to {addr} landed in {mailbox} after {waited:.2f} s")

    acc = gendb.ACTIVE_ACCOUNT
    local, dom = acc.split("@")
    checks.run("an existing account receives mail", delivered, acc, f"{dom}/{local}/")

    def rejects_unknown():
        code, msg = pf.rcpt(NEW_ACCOUNT)
        E.check(code == 550 and "unknown" in msg.lower(), f"RCPT TO:<{NEW_ACCOUNT}> before it exists: {code} {msg}")
    checks.run("an address not in the database is rejected", rejects_unknown)

    mailbox = "d0001.example/live-new/"

    def add_account():
        t = E.commit(db, [E.account_sql(E.domain_id(db, gendb.ACTIVE_DOMAIN), NEW_ACCOUNT,
                                        gendb.HASH_OF[gendb.ROTATE_PASSWORDS[0]])])
        reaches(lambda: accepted(NEW_ACCOUNT), t, "RCPT TO the added account accepted")
        delivered(NEW_ACCOUNT, mailbox)
    checks.run("an added account is accepted and its mail lands in its Maildir", add_account)

    def add_alias():
        E.check(rejected(NEW_ALIAS), f"RCPT TO:<{NEW_ALIAS}> accepted before the alias exists")
        t = E.commit(db, [E.alias_sql(E.domain_id(db, gendb.ACTIVE_DOMAIN), NEW_ALIAS, NEW_ACCOUNT)])
        reaches(lambda: accepted(NEW_ALIAS), t, "RCPT TO the added alias accepted")
        delivered(NEW_ALIAS, mailbox)
    checks.run("mail to an added alias lands in the account's Maildir", add_alias)

    def add_domain():
        # smtpd caches how it resolved a recipient address (its resolve
        # cache lives as long as the smtpd process), so the account's own
        # address is asked only once, after the domain is in the table;
        # another address of the domain shows the "before".
        probe = "probe@" + NEW_DOMAIN
        E.check(rejected(probe), f"RCPT TO:<{probe}> accepted before its domain exists")
        db.execute("BEGIN IMMEDIATE")
        try:
            did = E.add_domain(db, NEW_DOMAIN)
            db.execute(*E.account_sql(did, NEW_DOMAIN_ACCOUNT, gendb.HASH_OF[gendb.ROTATE_PASSWORDS[1]]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        t = time.monotonic()
        table = "lmdb:" + pf.maps["virtual_domains"]
        reaches(lambda: E.postmap_q(NEW_DOMAIN, table)[0] and E.postmap_q(
            NEW_DOMAIN_ACCOUNT, "lmdb:" + pf.maps["vmailbox"])[0], t, "added domain and account in the tables")
        code, msg = pf.rcpt(NEW_DOMAIN_ACCOUNT)
        E.check(code == 250, f"RCPT TO:<{NEW_DOMAIN_ACCOUNT}> on the added domain: {code} {msg}")
        delivered(NEW_DOMAIN_ACCOUNT, f"{NEW_DOMAIN}/someone/")
    checks.run("a new domain with an account receives mail", add_domain)

    def remove_account():
        t = E.commit(db, [("DELETE FROM email_accounts WHERE email = ?", (NEW_ACCOUNT,))])
        reaches(lambda: rejected(NEW_ACCOUNT), t, "RCPT TO the removed account rejected")
        code, msg = pf.rcpt(NEW_ACCOUNT)
        E.check(code == 550, f"RCPT TO:<{NEW_ACCOUNT}> after removal: {code} {msg}")
        E.check(accepted(acc), f"{acc} is no longer accepted after another account was removed")
    checks.run("a removed account is rejected at RCPT TO", remove_account)


if __name__ == "__main__":
    E.main(test)
