#!/usr/bin/env python3
"""Proof for smtpd_sender_login_maps: mapsyncd runs as a daemon on the
shipped config with its sender_login map enabled (its ';' lines; paths
moved into a temporary folder, the same `postmap lmdb:` hook). A private
Postfix instance offers SASL AUTH through the private Dovecot's auth
service (Dovecot SASL on a unix socket; Dovecot's passdb is mapsyncd's
passwd-file) and has reject_sender_login_mismatch: an account logged in
sends as itself and as an alias that delivers to it; as another account's
address it is rejected, and so is a client that did not log in. An alias
added in the database is usable within debounce plus the postmap hook (the
live tests' latency limit), and a removed one is rejected again."""

import os
import re
import smtplib
import sys
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib as E  # noqa: E402

NEW_ALIAS = "live-send@d0001.example"


def enable_section(text, header):
    """Removes the ';' of the lines of the commented section `header`."""
    lines, out, inside = text.split("\n"), [], False
    for ln in lines:
        if ln.startswith(";[") or (ln.startswith("[") and inside):
            inside = ln == ";" + header
        elif not ln.startswith(";"):
            inside = False
        out.append(ln[1:] if inside and ln.startswith(";") else ln)
    return "\n".join(out)


def sender_login_conf(tmp):
    with open(E.SHIPPED_CONF) as f:
        text = enable_section(f.read(), "[map sender_login]")
    E.check(re.search(r"(?m)^\[map sender_login\]$", text), f"{E.SHIPPED_CONF} has no ;[map sender_login]")
    path = os.path.join(tmp, "shipped-sender-login.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def test(checks, tmp):
    gendb = E.import_gendb()
    db_path = os.path.join(tmp, "db", "database.sqlite")
    E.generate_db(db_path, accounts=40, hostile=False)
    db = E.connect(db_path)
    conf = E.Conf(tmp, db_path, src=sender_login_conf(tmp))
    out = {m: conf.output(conf.postfix_map(m)) for m in E.POSTFIX_MAPS}
    sender_login = conf.output("sender_login")
    passwd = conf.output(conf.passwd_map())
    auth_socket = os.path.join(tmp, "dovecot-auth-postfix")
    user, password = gendb.ACTIVE_ACCOUNT, gendb.ACTIVE_ACCOUNT_PASSWORD
    other = db.execute("SELECT a.email FROM email_accounts a JOIN domains d ON d.id = a.domain_id"
                       " WHERE a.active = 1 AND d.active = 1 AND a.email <> ? ORDER BY a.id LIMIT 1",
                       (user,)).fetchone()[0]

    with E.SystemPostfixConfig() as sysconf:
        daemon = E.Daemon(conf)
        pf = dv = None
        try:
            daemon.start()
            E.check(os.path.exists(sender_login + ".lmdb"), f"the first sync built no {sender_login}.lmdb")
            dv = E.Dovecot(tmp, passwd, auth_socket=auth_socket)
            dv.start()
            ok, _ = E.wait_for(lambda: os.path.exists(auth_socket), 10, 0.05)
            E.check(ok, f"Dovecot made no {auth_socket}")
            pf = E.Postfix(tmp, sysconf, out, extra_main={
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": auth_socket,
                "smtpd_sender_login_maps": "lmdb:" + sender_login,
                "smtpd_sender_restrictions": "reject_sender_login_mismatch",
            })
            rc, said = pf.check()
            E.check(rc == 0, f"postfix check: {said}")
            pf.start()

            def attempt(sender, login=True):
                """The RCPT TO answer (code, text) to mail from sender."""
                with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as s:
                    s.ehlo("client.e2e.test")
                    if login:
                        s.login(user, password)
                    code, msg = s.mail(sender)
                    E.check(code == 250, f"MAIL FROM:<{sender}>: {code} {msg!r}")
                    code, msg = s.rcpt(other)
                    return code, msg.decode(errors="replace")

            def accepted(sender):
                code, msg = attempt(sender)
                E.check(code == 250, f"{user} sending as {sender}: {code} {msg}")

            def rejected(sender, login=True):
                code, msg = attempt(sender, login)
                E.check(code == 553 and "Sender address rejected" in msg,
                        f"{'logged in' if login else 'anonymous'} sending as {sender}: {code} {msg};"
                        f" maillog:\n{pf.maillog_text()[-2000:]}")

            checks.run("a logged-in account may send as itself", accepted, user)
            checks.run("... and as an alias that delivers to it", accepted, gendb.MULTI_ALIAS)
            checks.run("... not as another account's address", rejected, other)
            checks.run("a client that did not log in may not use an account's address", rejected, user, False)
            checks.run("an inactive alias is not the account's", rejected, gendb.INACTIVE_ALIAS)

            def reaches(pred, since, what):
                ok, _ = E.wait_for(pred, 10, 0.02)
                took = time.monotonic() - since
                E.check(ok, f"{what}: not after {took:.1f} s; mapsyncd log:\n{daemon.log()[-3000:]}")
                E.check(took <= E.LATENCY_LIMIT_S, f"{what}: took {took:.2f} s, over {E.LATENCY_LIMIT_S} s")
                E.log(f"     {what}: {took:.2f} s after COMMIT")

            def ok_as(sender):
                return attempt(sender)[0] == 250

            def live_alias():
                rejected(NEW_ALIAS)
                t = E.commit(db, [E.alias_sql(E.domain_id(db, gendb.ACTIVE_DOMAIN), NEW_ALIAS, user)])
                reaches(lambda: ok_as(NEW_ALIAS), t, "an added alias usable as sender")
                t = E.commit(db, [("UPDATE aliases SET active = 0 WHERE source = ?", (NEW_ALIAS,))])
                reaches(lambda: not ok_as(NEW_ALIAS), t, "a deactivated alias rejected as sender")
                rejected(NEW_ALIAS)
            checks.run("a database change takes effect within debounce plus postmap", live_alias)

            def clean_log():
                bad = [ln for ln in pf.maillog_text().splitlines()
                       if any(w in ln for w in ("warning:", "fatal:", "panic:", "error:"))
                       and "SASL authentication failed" not in ln]
                E.check(not bad, "Postfix logged:\n" + "\n".join(bad[:30]))
            checks.run("Postfix logged no warning or error", clean_log)
            checks.expect("mapsyncd still runs", daemon.alive(), f"mapsyncd exited {daemon.proc.returncode}")
        finally:
            status = daemon.stop()
            if pf:
                pf.stop()
            if dv:
                dv.stop()
            E.log(f"mapsyncd stopped (exit status {status}); its log:\n{daemon.log()[-3000:]}")
            if pf:
                E.log(f"Postfix maillog:\n{pf.maillog_text()[-4000:]}")


if __name__ == "__main__":
    E.main(test)
