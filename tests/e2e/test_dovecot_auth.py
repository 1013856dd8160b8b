#!/usr/bin/env python3
"""Proof for Dovecot: mapsyncd --once with the shipped config (paths moved
into a temporary folder) writes the passwd-file; a private Dovecot with
passdb and userdb passwd-file on it authenticates exactly the active
accounts with their Laravel bcrypt passwords (doveadm auth test), lists
exactly the expected users and shows the quota rule from the quota column
(doveadm user, doveadm quota get)."""

import os
import re
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib as E  # noqa: E402


def test(checks, tmp):
    gendb = E.import_gendb()
    E.check(gendb is not None, f"{E.TOOLS}/gendb.py is missing")
    db_path = os.path.join(tmp, "db", "database.sqlite")
    regular = E.generate_db(db_path, accounts=100, hostile=True)
    conf = E.Conf(tmp, db_path)
    passwd = conf.output(conf.passwd_map())
    db = E.connect(db_path)
    exp = E.expected_maps(db, regular)["passwd"]
    pw_of = {h: p for p, h in gendb.HASH_OF.items()}

    with E.SystemPostfixConfig():  # the shipped postmap hooks run too
        rc, text = E.mapsyncd_once(conf)
        E.log(f"mapsyncd --once exited {rc}; its output:\n{text}")
        checks.expect("mapsyncd --once exits 0", rc == 0, f"exit status {rc}")
        E.check(os.path.exists(passwd), f"mapsyncd wrote no {passwd}")
        dv = E.Dovecot(tmp, passwd)
        try:
            dv.start()
            run_checks(checks, dv, gendb, exp, pw_of, db)
            errors = [ln for ln in dv.log_text().splitlines() if re.search(r": (Error|Warning|Fatal|Panic):", ln)]
            checks.expect("Dovecot logged no error or warning", not errors,
                          "the Dovecot log says:\n" + "\n".join(errors[:30]))
        finally:
            dv.stop()


def run_checks(checks, dv, gendb, exp, pw_of, db):
    def auth(user, password, want):
        ok, out = dv.auth_test(user, password)
        E.check(ok == want, f"doveadm auth test {user} {password}: {'succeeded' if ok else 'failed'},"
                f" expected {'success' if want else 'failure'}:\n{out}")

    acc, pw = gendb.ACTIVE_ACCOUNT, gendb.ACTIVE_ACCOUNT_PASSWORD
    checks.run("auth test: active account with its password succeeds", auth, acc, pw, True)
    checks.run("auth test: upper-case login of an active account succeeds", auth, acc.upper(), pw, True)
    checks.run("auth test: wrong password fails", auth, acc, pw + "x", False)
    checks.run("auth test: another account's password fails", auth, acc, gendb.TEST_PASSWORDS[2], False)
    for p in gendb.TEST_PASSWORDS:
        checks.run(f"auth test: inactive account fails ({p})", auth, gendb.INACTIVE_ACCOUNT, p, False)
        checks.run(f"auth test: account of an inactive domain fails ({p})", auth,
                   gendb.INACTIVE_DOMAIN_ACCOUNT, p, False)

    def every_user_listed():
        # passwd-file userdb iteration: the consumer's full list of logins.
        rc, out, err = dv.doveadm("user", "*")
        E.check(rc == 0, f"doveadm user '*' exited {rc}: {err.strip()}")
        got = set(out.split())
        extra, missing = sorted(got - set(exp)), sorted(set(exp) - got)
        E.check(not extra and not missing, f"doveadm user '*': logins not expected {extra[:20]!r},"
                f" logins missing {missing[:20]!r}")
        E.log(f"     {len(got)} logins, as expected")
    checks.run("doveadm user '*' lists exactly the expected logins", every_user_listed)

    def every_password():
        # Each expected login with the password of its hash (one bcrypt each).
        wrong = []
        for user, (h, _) in sorted(exp.items()):
            if h in pw_of and not dv.auth_test(user, pw_of[h])[0]:
                wrong.append(user)
        E.check(not wrong, f"doveadm auth test fails for {wrong[:20]!r} with their own passwords")
    checks.run("every expected login authenticates with its password", every_password)

    def user_quota(user, quota_mib):
        f = dv.user(user)
        E.check(f is not None, f"doveadm user {user}: unknown user")
        want = f"*:storage={quota_mib}M"
        E.check(f.get("quota_rule") == want,
                f"doveadm user {user}: quota_rule is {f.get('quota_rule')!r}, expected {want!r} (fields {f})")
    checks.run("doveadm user: quota rule from the quota column", user_quota, acc, gendb.ACTIVE_ACCOUNT_QUOTA)
    other = [(u, q) for u, (h, q) in sorted(exp.items()) if q not in (0, gendb.ACTIVE_ACCOUNT_QUOTA)]
    if other:
        checks.run(f"doveadm user: quota rule {other[0][1]}M of {other[0][0]}", user_quota, *other[0])

    def quota_get(user, quota_mib):
        rc, out, err = dv.doveadm("quota", "get", "-u", user)
        E.check(rc == 0, f"doveadm quota get -u {user} exited {rc}: {err.strip()}")
        limits = [ln.split() for ln in out.splitlines() if "STORAGE" in ln]
        E.check(limits, f"doveadm quota get -u {user} shows no STORAGE line:\n{out}")
        # Quota name, Type, Value, Limit, %: the limit is in KiB; '-' is none.
        limit = limits[0][-2]
        want = str(quota_mib * 1024) if quota_mib else "-"
        E.check(limit == want, f"doveadm quota get -u {user}: STORAGE limit {limit}, expected {want}:\n{out}")
    checks.run("doveadm quota get: the limit Dovecot enforces", quota_get, acc, gendb.ACTIVE_ACCOUNT_QUOTA)
    unlimited = [u for u, (h, q) in sorted(exp.items()) if q == 0]
    if unlimited:
        checks.run(f"doveadm quota get: quota 0 means no limit ({unlimited[0]})", quota_get, unlimited[0], 0)

    def hostile():
        for r in gendb.HOSTILE_ROWS:
            if r["table"] != "email_accounts":
                continue
            v = r["values"]
            verdict = r["expect"]["passwd"]
            email = v["email"]
            if verdict == "valid":
                continue
            # Neither the row's login, nor any line or field it could inject.
            names = {email, email.lower()}
            for part in email.replace("\r", "\n").split("\n"):
                names.update({part.strip(), part.split(":")[0], part.split(" ")[0]})
            for n in sorted(x for x in names if x and x.lower() not in exp):
                E.check(dv.user(n) is None, f"hostile row {r['why']!r}: doveadm user {n!r} exists")
                for p in gendb.TEST_PASSWORDS[:1] + ("x", ""):
                    ok, out = dv.auth_test(n, p)
                    E.check(not ok, f"hostile row {r['why']!r}: {n!r} logs in with {p!r}")
        dup = [r for r in gendb.HOSTILE_ROWS if r.get("key") == "dup@d0001.example"]
        if dup:
            first = min(r["values"]["password"] for r in dup)
            ok, _ = dv.auth_test("dup@d0001.example", pw_of[first])
            E.check(ok, "dup@d0001.example: the first row's password does not work")
            for r in dup:
                if r["values"]["password"] != first:
                    ok, _ = dv.auth_test("dup@d0001.example", pw_of[r["values"]["password"]])
                    E.check(not ok, "dup@d0001.example: the repeated row's password works too")
    checks.run("hostile accounts: no login appears or is injected", hostile)


if __name__ == "__main__":
    E.main(test)
