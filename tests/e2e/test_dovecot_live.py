#!/usr/bin/env python3
"""Live proof for Dovecot: mapsyncd runs as a daemon on the shipped config
(paths moved into a temporary folder) while a private Dovecot serves IMAP on
loopback with passdb and userdb passwd-file on the generated file. A
password changed twice within one second, an added account and a
deactivated account reach IMAP LOGIN (python3 imaplib) within 2 s of the
COMMIT, without any Dovecot reload."""

import os
import sys
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib as E  # noqa: E402

NEW_ACCOUNT = "live-new@d0001.example"


def test(checks, tmp):
    gendb = E.import_gendb()
    E.check(gendb is not None, f"{E.TOOLS}/gendb.py is missing")
    db_path = os.path.join(tmp, "db", "database.sqlite")
    E.generate_db(db_path, accounts=50, hostile=False)
    conf = E.Conf(tmp, db_path)
    passwd = conf.output(conf.passwd_map())
    db = E.connect(db_path)

    with E.SystemPostfixConfig():  # the shipped postmap hooks run too
        daemon = E.Daemon(conf)
        dv = None
        try:
            daemon.start()
            E.check(os.path.exists(passwd), f"the daemon's first sync wrote no {passwd}")
            dv = E.Dovecot(tmp, passwd)
            dv.start()
            master = dv.master_pid()
            live_checks(checks, gendb, db, dv, daemon, passwd)

            def no_reload():
                E.check(dv.master_pid() == master,
                        f"Dovecot's master pid changed from {master} to {dv.master_pid()}")
                said = [ln for ln in dv.log_text().splitlines() if "SIGHUP" in ln or "reloading" in ln]
                E.check(not said, "Dovecot was reloaded:\n" + "\n".join(said))
            checks.run("no Dovecot reload happened", no_reload)
            checks.expect("mapsyncd still runs", daemon.alive(),
                          f"mapsyncd exited with status {daemon.proc.returncode}")
        finally:
            status = daemon.stop()
            if dv:
                dv.stop()
            E.log(f"mapsyncd stopped (exit status {status}); its log:\n{daemon.log()}")


def live_checks(checks, gendb, db, dv, daemon, passwd):
    acc = gendb.ACTIVE_ACCOUNT
    old_pw = gendb.ACTIVE_ACCOUNT_PASSWORD
    pw1, pw2 = gendb.ROTATE_PASSWORDS
    h1, h2 = (gendb.HASH_OF[p] for p in gendb.ROTATE_PASSWORDS)
    E.check(len(h1) == len(h2) == len(gendb.ACTIVE_ACCOUNT_HASH), "the rotation hashes differ in length")

    def login(user, password):
        return dv.imap_login(user, password)

    checks.expect("IMAP LOGIN with the generated password", login(acc, old_pw),
                  f"{acc} cannot log in with {old_pw!r}; Dovecot log:\n{dv.log_text()}")

    def reaches(pred, since, what):
        """pred() becomes true within LATENCY_LIMIT_S of since (a COMMIT)."""
        ok, _ = E.wait_for(pred, 10, 0.02)
        took = time.monotonic() - since
        E.check(ok, f"{what}: not after {took:.1f} s (limit {E.LATENCY_LIMIT_S} s);"
                f" mapsyncd log:\n{daemon.log()[-3000:]}")
        E.check(took <= E.LATENCY_LIMIT_S, f"{what}: took {took:.2f} s, over the {E.LATENCY_LIMIT_S} s limit")
        E.log(f"     {what}: {took:.2f} s after COMMIT")
        return took

    def password_twice():
        # Dovecot stats the passwd-file at most once per wall-clock second
        # and re-reads it only when its mtime (in seconds) or size changed;
        # bcrypt hashes all have one length. So: commit right after a second
        # boundary, let Dovecot read the first rewrite with a login in that
        # same second, then commit again at once: the second rewrite falls
        # into the same second, and only an mtime moved on by mapsyncd makes
        # Dovecot read it.
        time.sleep(1.02 - (time.time() % 1.0))
        st0 = os.stat(passwd)
        t1 = E.commit(db, [("UPDATE email_accounts SET password = ? WHERE email = ?", (h1, acc))])
        second = int(time.time())
        ok, _ = E.wait_for(lambda: os.stat(passwd).st_ino != st0.st_ino, 10, 0.005)
        E.check(ok, f"mapsyncd did not rewrite {passwd} within 10 s of the first COMMIT")
        st1 = os.stat(passwd)
        reaches(lambda: login(acc, pw1), t1, "first new password accepted")
        t2 = E.commit(db, [("UPDATE email_accounts SET password = ? WHERE email = ?", (h2, acc))])
        E.log(f"     the two COMMITs were {t2 - t1:.2f} s apart"
              f"{'' if int(time.time()) == second else ' (not within one wall-clock second: a slow machine)'}")
        E.check(t2 - t1 < 1.0, f"the two COMMITs were {t2 - t1:.2f} s apart, not within one second")
        reaches(lambda: login(acc, pw2), t2, "second new password accepted")
        st2 = os.stat(passwd)
        E.check(st2.st_size == st1.st_size, f"passwd changed size ({st1.st_size} -> {st2.st_size}):"
                " the test meant same-length hashes")
        E.check(int(st2.st_mtime) > int(st1.st_mtime) > int(st0.st_mtime),
                "passwd rewritten without its mtime moving on a whole second each time"
                f" ({st0.st_mtime:.3f} -> {st1.st_mtime:.3f} -> {st2.st_mtime:.3f})")
        for p in (old_pw, pw1):
            E.check(not login(acc, p), f"{acc} still logs in with the old password {p!r}")
    checks.run("password changed twice within one second: newest works, old ones fail", password_twice)

    def add_account():
        E.check(not login(NEW_ACCOUNT, pw1), f"{NEW_ACCOUNT} logs in before it exists")
        t = E.commit(db, [E.account_sql(E.domain_id(db, gendb.ACTIVE_DOMAIN), NEW_ACCOUNT, h1, quota=512)])
        reaches(lambda: login(NEW_ACCOUNT, pw1), t, "added account logs in")
        E.check(not login(NEW_ACCOUNT, pw2), f"{NEW_ACCOUNT} logs in with a wrong password")
    checks.run("an added account can log in", add_account)

    def deactivate():
        E.check(login(NEW_ACCOUNT, pw1), f"{NEW_ACCOUNT} cannot log in before the test deactivates it")
        t = E.commit(db, [("UPDATE email_accounts SET active = 0 WHERE email = ?", (NEW_ACCOUNT,))])
        reaches(lambda: not login(NEW_ACCOUNT, pw1), t, "deactivated account refused")
        E.check(login(acc, pw2), f"{acc} cannot log in any more after another account was deactivated")
    checks.run("a deactivated account cannot log in", deactivate)

    def deactivate_domain():
        users = [u for (u,) in db.execute(
            "SELECT email FROM email_accounts WHERE active = 1 AND domain_id = ? ORDER BY id LIMIT 1",
            (E.domain_id(db, gendb.ACTIVE_DOMAIN_2),))]
        E.check(users, f"no active account on {gendb.ACTIVE_DOMAIN_2}")
        u = users[0]
        pw = next(p for p, h in gendb.HASH_OF.items() if h == db.execute(
            "SELECT password FROM email_accounts WHERE email = ?", (u,)).fetchone()[0])
        E.check(login(u, pw), f"{u} cannot log in before its domain is deactivated")
        t = E.commit(db, [("UPDATE domains SET active = 0 WHERE domain = ?", (gendb.ACTIVE_DOMAIN_2,))])
        reaches(lambda: not login(u, pw), t, "account of a deactivated domain refused")
    checks.run("deactivating a domain locks out its accounts", deactivate_domain)


if __name__ == "__main__":
    E.main(test)
