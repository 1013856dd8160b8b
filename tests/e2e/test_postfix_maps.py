#!/usr/bin/env python3
"""Offline proof for Postfix: mapsyncd --once with the shipped config (paths
moved into a temporary folder) on a tools/gendb.py database with hostile
rows; the shipped `postmap lmdb:` hooks build the three tables, and Postfix's
own postmap and `postfix check` agree with what the admin panel holds."""

import os
import shutil
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib as E  # noqa: E402


def test(checks, tmp):
    gendb = E.import_gendb()
    E.check(gendb is not None, f"{E.TOOLS}/gendb.py is missing")
    db_path = os.path.join(tmp, "db", "database.sqlite")
    regular = E.generate_db(db_path, accounts=200, hostile=True)
    conf = E.Conf(tmp, db_path)
    names = {m: conf.postfix_map(m) for m in E.POSTFIX_MAPS}
    out = {m: conf.output(names[m]) for m in E.POSTFIX_MAPS}
    table = {m: "lmdb:" + out[m] for m in E.POSTFIX_MAPS}
    db = E.connect(db_path)
    exp = E.expected_maps(db, regular)

    with E.SystemPostfixConfig() as sysconf:
        rc, text = E.mapsyncd_once(conf)
        E.log(f"mapsyncd --once exited {rc}; its output:\n{text}")
        checks.expect("mapsyncd --once exits 0", rc == 0, f"exit status {rc}")

        def hooks_built_tables():
            for m in E.POSTFIX_MAPS:
                hook = conf.maps[names[m]].get("on_change", "")
                E.check(f"postmap lmdb:{out[m]}" in hook,
                        f"[map {names[m]}] on_change is {hook!r}, not 'postmap lmdb:{out[m]}'")
                E.check(os.path.exists(out[m]), f"{out[m]} was not written")
                E.check(os.path.exists(out[m] + ".lmdb"), f"the on_change hook built no {out[m]}.lmdb")
                E.check(os.stat(out[m] + ".lmdb").st_mtime >= os.stat(out[m]).st_mtime - 1,
                        f"{out[m]}.lmdb is older than {out[m]}: the hook did not run after the write")
        checks.run("the shipped hooks build lmdb tables of all three maps", hooks_built_tables)

        def no_reload_hooks():
            for section, key, cmd in conf.hooks:
                E.check("postfix reload" not in cmd and "postfix stop" not in cmd,
                        f"[{section}] {key} = {cmd!r}: lmdb tables need no postfix reload")
        checks.run("no postfix reload in the hooks", no_reload_hooks)

        def hooks_said_no_warning():
            bad = [ln for ln in text.splitlines() if "postmap:" in ln and ("warning" in ln or "fatal" in ln)]
            E.check(not bad, "postmap complained while mapsyncd ran the hooks:\n" + "\n".join(bad))
        checks.run("postmap printed no warning in the hooks", hooks_said_no_warning)

        def postmap_no_warning(m):
            # Postfix's own build of a copy of the file, every message kept.
            d = os.path.join(tmp, "postmap-check")
            os.makedirs(d, exist_ok=True)
            copy = os.path.join(d, os.path.basename(out[m]))
            shutil.copyfile(out[m], copy)
            rc, so, se = E.run(["postmap", "lmdb:" + copy])
            E.check(rc == 0 and not (so + se).strip(),
                    f"postmap lmdb:{os.path.basename(out[m])} exited {rc} and said:\n{(so + se).strip()}")
        for m in E.POSTFIX_MAPS:
            checks.run(f"postmap lmdb:{m} builds with no warning at all", postmap_no_warning, m)

        def full_content(m):
            got = E.postmap_s(table[m])
            want = exp[m]
            extra = sorted(set(got) - set(want))
            missing = sorted(set(want) - set(got))
            E.check(not extra and not missing,
                    f"postmap -s {m}: keys not expected {extra[:20]!r}, keys missing {missing[:20]!r}")
            wrong = []
            for k, v in got.items():
                if m == "virtual_aliases":
                    dests = v.split(", ")
                    if sorted(dests) != sorted(want[k]) or len(set(dests)) != len(dests):
                        wrong.append((k, v, want[k]))
                elif m == "vmailbox" and v != want[k]:
                    wrong.append((k, v, want[k]))
                elif m == "virtual_domains" and not v:
                    wrong.append((k, v, "a non-empty value"))
            E.check(not wrong, f"postmap -s {m}: wrong values (key, got, want): {wrong[:10]!r}")
            E.log(f"     {m}: {len(got)} keys, as expected")
        for m in E.POSTFIX_MAPS:
            checks.run(f"postmap -s {m}: exactly the expected keys and values", full_content, m)

        def q(key, m, want_found, want_value=None):
            found, value = E.postmap_q(key, table[m])
            E.check(found == want_found,
                    f"postmap -q {key!r} {m}: {'found ' + repr(value) if found else 'not found'},"
                    f" expected {'found' if want_found else 'not found'}")
            if want_value is not None:
                E.check(want_value(value), f"postmap -q {key!r} {m} gave {value!r}")

        checks.run("postmap -q: active domain found", q, gendb.ACTIVE_DOMAIN, "virtual_domains", True)
        checks.run("postmap -q: inactive domain not found", q, gendb.INACTIVE_DOMAIN, "virtual_domains", False)
        local, dom = gendb.ACTIVE_ACCOUNT.split("@")
        checks.run("postmap -q: active mailbox gives domain/local/", q, gendb.ACTIVE_ACCOUNT, "vmailbox",
                   True, lambda v: v == f"{dom}/{local}/")
        checks.run("postmap -q: inactive account not found", q, gendb.INACTIVE_ACCOUNT, "vmailbox", False)
        checks.run("postmap -q: account of an inactive domain not found", q,
                   gendb.INACTIVE_DOMAIN_ACCOUNT, "vmailbox", False)
        checks.run("postmap -q: alias with three rows gives all three", q, gendb.MULTI_ALIAS,
                   "virtual_aliases", True,
                   lambda v: sorted(v.split(", ")) == sorted(gendb.MULTI_ALIAS_DESTINATIONS))
        checks.run("postmap -q: inactive alias not found", q, gendb.INACTIVE_ALIAS, "virtual_aliases", False)
        checks.run("postmap -q: alias of an inactive domain not found", q, gendb.INACTIVE_DOMAIN_ALIAS,
                   "virtual_aliases", False)
        def inactive_domains_hidden():
            rows = db.execute(
                "SELECT 'virtual_domains', lower(domain) FROM domains WHERE NOT active UNION ALL"
                " SELECT 'vmailbox', lower(email) FROM email_accounts WHERE domain_id IN"
                " (SELECT id FROM domains WHERE NOT active) UNION ALL"
                " SELECT 'virtual_aliases', lower(source) FROM aliases WHERE domain_id IN"
                " (SELECT id FROM domains WHERE NOT active)").fetchall()
            for m, k in rows:
                q(k, m, False)
            E.log(f"     {len(rows)} domains, accounts and aliases of inactive domains: none found")
        checks.run("postmap -q: nothing of any inactive domain is found", inactive_domains_hidden)

        def hostile(m):
            keys = sorted(k for k in E.hostile_invalid_keys(gendb, m) if k not in exp[m])
            for k in keys:
                q(k, m, False)
            E.log(f"     {m}: none of {len(keys)} injected/hostile keys found")
        checks.run("hostile alias rows neither appear nor inject keys", hostile, "virtual_aliases")
        checks.run("hostile account rows neither appear nor inject keys", hostile, "vmailbox")

        pf = E.Postfix(tmp, sysconf, out)

        def postfix_check():
            rc, said = pf.check()
            E.check(rc == 0, f"postfix -c {pf.config_dir} check exited {rc}:\n{said}")
            bad = [ln for ln in said.splitlines() if "warning" in ln or "fatal" in ln or "error" in ln]
            E.check(not bad, f"postfix -c {pf.config_dir} check complained:\n" + "\n".join(bad))
        checks.run("postfix check passes on a main.cf using the three lmdb tables", postfix_check)

        def postconf_reads_tables():
            rc, so, se = E.run(["postconf", "-c", pf.config_dir, "-h", "virtual_mailbox_maps"], check_rc=True)
            E.check(so.strip() == table["vmailbox"], f"postconf shows virtual_mailbox_maps = {so.strip()}")
        checks.run("postconf -c DIR sees the generated tables", postconf_reads_tables)


if __name__ == "__main__":
    E.main(test)
