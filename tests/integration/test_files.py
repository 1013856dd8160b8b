#!/usr/bin/env python3
"""[files NAME] outputs through the real binary: the shipped OpenDKIM
sections (conf/mapsyncd.conf with its ';' lines enabled, paths moved into a
private directory) write one key file per active domain with a selector and
a key, with the configured mode and owner, plus KeyTable and SigningTable;
a deactivated domain's file is removed, a changed selector's old file
removed and the new one written, a file mapsyncd did not write is left
alone; hostile names and non-PEM keys are invalid rows named by set and
escaped file name; on_change runs once per changed cycle with
MAPSYNCD_CHANGED; a SIGKILL in the middle of a set update leaves no partial
file and a manifest that lists every file of mapsyncd's, and the next run
repairs the rest; and no byte of a key's body reaches stdout, stderr,
STATUS, a hook's environment or --dry-run output."""

import os
import pwd
import re
import signal
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import read, wait_for  # noqa: E402

gendb = harness.gendb
KEY_OWNER = "opendkim"  # tools/install-deps test installs opendkim, which makes the user


def key_body_lines(pem):
    """The base64 lines of a PEM block: none of them may be logged."""
    return [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]


class FilesEnv(harness.Env):
    def __init__(self, dkim=3, **kw):
        super().__init__(accounts=20, **kw)
        self.keys = os.path.join(self.dir, "opendkim", "keys")
        os.makedirs(self.keys)
        self.opendkim = os.path.dirname(self.keys)
        self.env_log = os.path.join(self.dir, "files-hook.env")
        c = self.connect()
        try:
            self.pems = {}
            for k in range(1, dkim + 1):
                priv, pub = gendb.dkim_keypair()
                c.execute("UPDATE domains SET dkim_selector = 'mail', dkim_private_key = ?, dkim_public_key = ?"
                          " WHERE id = ?", (priv, pub, k))
                self.pems[k] = priv
        finally:
            c.close()

    def files_config(self, hook=None, reload_cmd=None, extra=""):
        """The shipped config with the OpenDKIM sections enabled, moved."""
        text = self.shipped_config(hooks=True)
        text = re.sub(r"(?m)^;", "", text)
        text = re.sub(r"(?m)^on_change = postmap .*$", "on_change = " + harness.recorder_command(self), text)
        text = text.replace("/etc/opendkim/", self.opendkim + "/")
        text = text.replace("command = systemctl reload opendkim",
                            "command = " + (reload_cmd or 'echo "reload $MAPSYNCD_RELOAD $MAPSYNCD_MAP" >> '
                                            + self.hook_log))
        hook = hook or ('{ echo "files $MAPSYNCD_FILES $MAPSYNCD_DIRECTORY [$MAPSYNCD_CHANGED]"; } >> %s; '
                        'env >> %s' % (self.hook_log, self.env_log))
        text = text.replace("[files opendkim_keys]\n", "[files opendkim_keys]\non_change = %s\n%s" % (hook, extra))
        return text

    def key_files(self):
        return sorted(os.listdir(self.keys))

    def manifest(self):
        try:
            lines = read(os.path.join(self.state, "files-opendkim_keys.manifest")).splitlines()
        except FileNotFoundError:
            return None
        return sorted(ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("directory "))

    def file_hooks(self):
        try:
            return [ln for ln in read(self.hook_log).splitlines() if ln.startswith("files ")]
        except FileNotFoundError:
            return []


class FilesTestCase(harness.TestCase):
    def setUp(self):
        self.env = FilesEnv()
        self.daemons = []

    def once(self, *args, env=None):
        r = self.env.run("--once", *args, env=env)
        self.outputs = getattr(self, "outputs", []) + [r.stdout, r.stderr]
        return r

    def assert_no_key_material(self, texts):
        for k, pem in self.env.pems.items():
            for line in key_body_lines(pem):
                for t in texts:
                    self.assertNotIn(line, t, "a line of domain %s key body was output" % k)
        for t in texts:
            self.assertNotIn("PRIVATE KEY-----", t)


class TestShippedOpenDKIM(FilesTestCase):
    def test_keys_tables_modes_and_changes(self):
        e = self.env
        e.write_config(e.files_config())
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        # Domains 1 and 2 are active with keys; 3 is inactive.
        self.assertEqual(e.key_files(), ["d0001.example.mail.private", "d0002.example.mail.private"])
        for k in (1, 2):
            p = os.path.join(e.keys, "d%04d.example.mail.private" % k)
            st = os.stat(p)
            self.assertEqual(st.st_mode & 0o7777, 0o600)
            self.assertEqual(st.st_uid, pwd.getpwnam(KEY_OWNER).pw_uid)
            self.assertEqual(st.st_gid, pwd.getpwnam(KEY_OWNER).pw_gid)
            self.assertEqual(read(p), e.pems[k])
        self.assertEqual(read(os.path.join(e.opendkim, "KeyTable")), "".join(
            "mail._domainkey.d%04d.example\td%04d.example:mail:%s/d%04d.example.mail.private\n" % (k, k, e.keys, k)
            for k in (1, 2)))
        self.assertEqual(read(os.path.join(e.opendkim, "SigningTable")), "".join(
            "*@d%04d.example\tmail._domainkey.d%04d.example\n" % (k, k) for k in (1, 2)))
        self.assertEqual(e.manifest(), e.key_files())
        self.assertEqual(e.file_hooks(), ["files opendkim_keys %s [d0001.example.mail.private "
                                          "d0002.example.mail.private]" % e.keys])
        reloads = [ln for ln in read(e.hook_log).splitlines() if ln.startswith("reload ")]
        self.assertEqual(reloads, ["reload opendkim opendkim_keytable opendkim_signingtable opendkim_keys"])

        # Nothing changed: no hook, no write.
        ino = os.stat(os.path.join(e.keys, "d0001.example.mail.private")).st_ino
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(e.file_hooks()), 1)
        self.assertEqual(os.stat(os.path.join(e.keys, "d0001.example.mail.private")).st_ino, ino)

        # A file mapsyncd did not write stays, whatever happens.
        foreign = os.path.join(e.keys, "hand-made.private")
        with open(foreign, "w") as f:
            f.write("mine\n")

        # Domain 2 deactivated: its file goes; a selector change on domain 1:
        # old file removed, new one written; one hook run for both.
        e.sql("UPDATE domains SET active = 0 WHERE id = 2")
        e.sql("UPDATE domains SET dkim_selector = 's2024' WHERE id = 1")
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.key_files(), ["d0001.example.s2024.private", "hand-made.private"])
        self.assertEqual(e.manifest(), ["d0001.example.s2024.private"])
        self.assertEqual(e.file_hooks()[1:], ["files opendkim_keys %s [d0001.example.mail.private "
                                              "d0001.example.s2024.private d0002.example.mail.private]" % e.keys])
        self.assertIn("removed %s/d0002.example.mail.private" % e.keys, r.stderr)
        self.assertEqual(read(os.path.join(e.opendkim, "SigningTable")),
                         "*@d0001.example\ts2024._domainkey.d0001.example\n")

        # A new key for the domain replaces the file's bytes.
        priv, pub = gendb.dkim_keypair()
        e.pems["new"] = priv
        c = e.connect()
        c.execute("UPDATE domains SET dkim_private_key = ? WHERE id = 1", (priv,))
        c.close()
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(os.path.join(e.keys, "d0001.example.s2024.private")), priv)
        self.assertEqual(read(foreign), "mine\n")

        # Every row gone: only the foreign file is left, the manifest empty.
        e.sql("UPDATE domains SET dkim_private_key = NULL")
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.key_files(), ["hand-made.private"])
        self.assertEqual(e.manifest(), [])

        # --dry-run and --check name the set, never a key.
        c = e.connect()
        c.execute("UPDATE domains SET dkim_private_key = ? WHERE id = 1", (e.pems[1],))
        c.close()
        dry = e.run("--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertIn("opendkim_keys: would change: 1 written, 0 removed (1 files): d0001.example.s2024.private",
                      dry.stdout)
        self.assertEqual(e.key_files(), ["hand-made.private"])
        check = e.run("--check")
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn("1 file set", check.stdout)
        self.outputs += [dry.stdout, dry.stderr, check.stdout, check.stderr]
        self.assert_no_key_material(self.outputs + [read(e.hook_log), read(e.env_log)])

    def test_invalid_keys_and_names(self):
        e = self.env
        c = e.connect()
        # Passes the shipped query's prefix test, but is no key.
        c.execute("UPDATE domains SET dkim_private_key = ? WHERE id = 2",
                  ("-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n",))
        c.close()
        e.write_config(e.files_config())
        r = self.once("-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.key_files(), ["d0001.example.mail.private"])
        self.assertIn('opendkim_keys: skipped row with file name "d0002.example.mail.private": not a PEM '
                      'private key: libcrypto cannot read it as one', r.stderr)
        self.assertNotIn("AAAAAAAAAAAA", r.stderr)

        # on_invalid = fail: nothing of the set changes, the run fails.
        e.sql("UPDATE domains SET dkim_selector = 'new' WHERE id = 1")
        e.write_config(e.files_config().replace("content = pem-private-key\nmode = 0600\nowner = opendkim\n"
                                                "group = opendkim\non_invalid = skip\n",
                                                "content = pem-private-key\nmode = 0600\nowner = opendkim\n"
                                                "group = opendkim\non_invalid = fail\n"))
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(e.key_files(), ["d0001.example.mail.private"])
        self.assertIn("opendkim_keys: 1 invalid rows and on_invalid = fail: kept %s as it was" % e.keys, r.stderr)

        # Hostile names from a query of our own: none leaves the directory
        # or is written; each is reported, escaped.
        text = e.files_config()
        text = re.sub(r"(?s)\[files opendkim_keys\].*?(?=\n\n|\n#)", "[files hostile]\ndirectory = %s\n"
                      "query = SELECT column1, column2 FROM (VALUES ('../x', 'a'), ('a/b', 'b'), ('.hidden', 'c'),"
                      "\n  ('a' || char(0) || 'b', 'd'), (substr(hex(zeroblob(150)), 1, 300), 'e'), ('ok', 'f'),"
                      "\n  ('', 'g'), (NULL, 'h'), ('line' || char(10) || 'break', 'i'))\n" % e.keys, text)
        text = re.sub(r"(?m)^reload = opendkim\n", "", text)
        e.write_config(text)
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.key_files(), ["d0001.example.mail.private", "ok"])
        self.assertFalse(os.path.exists(os.path.join(e.opendkim, "x")))
        for name, why in (("../x", "starts with '.'"), ("a/b", "holds '/'"), (".hidden", "starts with '.'"),
                          ("a\\x00b", "holds a NUL byte"), ("", "is empty"), ("line\\x0abreak", "holds a byte")):
            self.assertIn('hostile: skipped row with file name "%s": file name %s' % (name, why), r.stderr)
        self.assertIn("file name is longer than 255 bytes", r.stderr)
        self.assertIn("file name is NULL", r.stderr)
        self.assertEqual(read(os.path.join(e.state, "files-hostile.manifest")).splitlines()[2:], ["ok"])

    def test_directory_guards(self):
        """A set's directory may hold no file of mapsyncd's own: refused when
        the configuration is read (by resolved path), whatever symlink
        leads there."""
        e = self.env
        link = os.path.join(e.dir, "link-to-db-dir")
        os.symlink(e.db_dir, link)
        for directory, want in ((e.db_dir, "holds the database %s" % e.db),
                                (link, "holds the database %s" % e.db),
                                (e.out, "holds the output of [map vmailbox]"),
                                (e.state, "is the state_dir"),
                                (os.path.join(link, "..", "state"), "and state_dir %s overlap" % e.state)):
            os.makedirs(e.state, exist_ok=True)
            e.write_config(e.files_config().replace("directory = %s\n" % e.keys, "directory = %s\n" % directory))
            r = e.run("--once")
            self.assertEqual(r.returncode, 78, r.stderr)
            # Said by config.c's text rule, or by paths.c on the resolved path.
            self.assertRegex(r.stderr, r"\[files opendkim_keys\] directory (= )?%s %s"
                             % (re.escape(directory), re.escape(want)))
        self.assertEqual(e.key_files(), [])

    def test_metrics(self):
        e = self.env
        metrics = os.path.join(e.dir, "metrics.prom")
        e.write_config(e.files_config().replace("[sync]\n", "[sync]\nmetrics_file = %s\n" % metrics))
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        text = read(metrics)
        self.assertIn('mapsyncd_map_rows{map="opendkim_keys"} 2\n', text)
        self.assertIn('mapsyncd_map_replacements_total{map="opendkim_keys"} 1\n', text)
        self.assertIn('mapsyncd_map_failed{map="opendkim_keys"} 0\n', text)
        self.assert_no_key_material([text])

    def test_owed_hook_keeps_its_names(self):
        """A set's on_change that failed stays owed, with its names, across
        runs (STATE_DIR/owed-hooks), and runs when it can."""
        e = self.env
        flag = os.path.join(e.dir, "hook-may-run")
        hook = ('[ -e %s ] || exit 1; echo "files $MAPSYNCD_FILES [$MAPSYNCD_CHANGED]" >> %s'
                % (flag, e.hook_log))
        e.write_config(e.files_config(hook=hook))
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("files opendkim_keys: hook failed", r.stderr)
        owed = read(os.path.join(e.state, "owed-hooks"))
        self.assertIn("files opendkim_keys d0001.example.mail.private d0002.example.mail.private\n", owed)
        # Another change while it is owed: the names add up.
        e.sql("UPDATE domains SET dkim_selector = 's2' WHERE id = 1")
        r = self.once()
        self.assertEqual(r.returncode, 1, r.stderr)
        open(flag, "w").close()
        r = self.once()  # nothing changes now; the owed hook runs
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.file_hooks(), ["files opendkim_keys [d0001.example.mail.private "
                                          "d0001.example.s2.private d0002.example.mail.private]"])
        self.assertFalse(os.path.exists(os.path.join(e.state, "owed-hooks")))

    def test_daemon_hook_once_per_cycle(self):
        e = self.env
        status = os.path.join(e.dir, "status.log")
        e.write_config(e.files_config())
        d = self.daemon()
        d.wait_ready()
        self.assertEqual(len(e.file_hooks()), 1)
        priv, pub = gendb.dkim_keypair()
        e.pems["new"] = priv
        c = e.connect()
        c.execute("BEGIN")
        c.execute("UPDATE domains SET dkim_private_key = ? WHERE id = 1", (priv,))
        c.execute("UPDATE domains SET active = 0 WHERE id = 2")
        c.execute("COMMIT")
        c.close()
        wait_for(lambda: len(e.file_hooks()) >= 2, 15, what="the set's on_change after the commit")
        self.assertEqual(read(os.path.join(e.keys, "d0001.example.mail.private")), priv)
        self.assertEqual(e.file_hooks()[1], "files opendkim_keys %s [d0001.example.mail.private "
                         "d0002.example.mail.private]" % e.keys)
        envs = read(e.env_log)
        self.assertIn("MAPSYNCD_CHANGED=d0001.example.mail.private d0002.example.mail.private\n", envs)
        self.assertIn("MAPSYNCD_FILES=opendkim_keys\n", envs)
        time.sleep(0.5)
        self.assertEqual(len(e.file_hooks()), 2)
        self.assertEqual(d.stop(), 0)
        with open(status, "w") as f:
            f.write("\n".join(d.notified("STATUS")))
        self.assert_no_key_material(["\n".join(d.log()), "\n".join(d.messages), envs, read(e.hook_log)])


def expected_sender_login(db):
    """sender_login by the schema's rules, from the raw tables (regular
    rows): each active account on an active domain as itself; an active
    alias on an active domain for each active account it delivers to."""
    import sqlite3
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        domains = {i: a == 1 for i, a in c.execute("SELECT id, active FROM domains")}
        owners, accounts = {}, set()
        for email, dom, active in c.execute("SELECT email, domain_id, active FROM email_accounts"):
            if active == 1 and domains[dom]:
                accounts.add(email)
                owners.setdefault(email.lower(), set()).add(email.lower())
        for src, dst, dom, active in c.execute("SELECT source, destination, domain_id, active FROM aliases"):
            if active == 1 and domains[dom] and dst in accounts:
                owners.setdefault(src.lower(), set()).add(dst.lower())
    finally:
        c.close()
    return "".join("%s\t%s\n" % (k, ", ".join(sorted(owners[k], key=lambda s: s.encode())))
                   for k in sorted(owners, key=lambda s: s.encode()))


class TestSenderLogin(FilesTestCase):
    """The shipped opt-in sender_login map: each active account may send as
    itself, an alias's source as the active accounts it delivers to."""

    def test_sender_login(self):
        e = self.env
        e.write_config(e.files_config())
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        path = e.output("sender_login")
        want = expected_sender_login(e.db)
        self.assertEqual(read(path), want)
        self.assertIn("%s\t%s\n" % (gendb.ACTIVE_ACCOUNT, gendb.ACTIVE_ACCOUNT), want)
        self.assertIn("%s\t%s\n" % (gendb.MULTI_ALIAS, gendb.ACTIVE_ACCOUNT), want)
        self.assertNotIn(gendb.INACTIVE_ACCOUNT, want)
        self.assertNotIn(gendb.INACTIVE_DOMAIN_ACCOUNT, want)
        self.assertNotIn(gendb.INACTIVE_ALIAS, want)
        # An alias to two accounts, a catch-all and an alias outside its
        # domain.
        c = e.connect()
        for src, dst in (("shared@d0001.example", gendb.ACTIVE_ACCOUNT), ("shared@d0001.example", "u000004@d0001.example"),
                         ("@d0001.example", gendb.ACTIVE_ACCOUNT), ("x@elsewhere.example", gendb.ACTIVE_ACCOUNT)):
            c.execute("INSERT INTO aliases (domain_id, source, destination, active) VALUES (1, ?, ?, 1)", (src, dst))
        c.close()
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        text = read(path)
        self.assertIn("shared@d0001.example\tu000001@d0001.example, u000004@d0001.example\n", text)
        self.assertEqual([ln for ln in text.splitlines() if ln.startswith("@")], [], "a catch-all source")
        self.assertNotIn("elsewhere", text)
        self.assertIn('sender_login: skipped row with key "x@elsewhere.example": value is NULL', r.stderr)


class TestKilledMidUpdate(FilesTestCase):
    """SIGKILL while a set is written, then while it is cut down: no file of
    the set is ever partial, every file of mapsyncd's is in the manifest,
    and the next run ends with exactly the database's files."""

    N = 30

    def setUp(self):
        self.env = FilesEnv(dkim=0, domains=self.N)
        self.daemons = []
        priv, pub = gendb.dkim_keypair()
        self.env.pems[0] = priv
        self.env.sql("UPDATE domains SET active = 1, dkim_selector = 'mail', dkim_private_key = ?", (priv,))
        self.env.write_config(self.env.files_config())

    def killed_run(self, at_least):
        """--once with every rename and unlink in the key directory slowed;
        SIGKILLed once `at_least(listing)` holds."""
        env = dict(os.environ, **harness.preload_env("SLOW_RENAME_SHIM", SLOW_RENAME_MS=60,
                                                     SLOW_RENAME_DIR="/opendkim/keys"))
        env.pop("NOTIFY_SOCKET", None)
        p = subprocess.Popen(harness.WRAPPER + [harness.MAPSYNCD, "-c", self.env.conf, "--once"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_for(lambda: at_least(self.env.key_files()) or p.poll() is not None, 60, 0.005,
                     what="the update under way")
            self.assertIsNone(p.poll(), "mapsyncd finished before it could be killed")
            p.send_signal(signal.SIGKILL)
        finally:
            p.wait()
            p.stderr.close()

    def assert_consistent(self):
        pem = self.env.pems[0]
        ours = [n for n in self.env.key_files() if not n.startswith(".")]
        manifest = self.env.manifest()
        self.assertIsNotNone(manifest)
        for n in ours:
            self.assertEqual(read(os.path.join(self.env.keys, n)), pem, "%s is partial" % n)
            self.assertIn(n, manifest, "%s is a file of mapsyncd's missing from the manifest" % n)
        for n in self.env.key_files():
            if n.startswith("."):  # replace.h's temporary files: ".NAME.XXXXXX"
                self.assertRegex(n, r"^\.d\d{4}\.example\.mail\.private\.[A-Za-z0-9]{6}$")

    def test_sigkill(self):
        e = self.env
        names = ["d%04d.example.mail.private" % k for k in range(1, self.N + 1)]
        self.killed_run(lambda ls: 5 <= len([n for n in ls if not n.startswith(".")]) < self.N - 5)
        written = [n for n in e.key_files() if not n.startswith(".")]
        self.assertLess(len(written), self.N)
        self.assert_consistent()
        self.assertEqual(e.manifest(), sorted(names), "every name is listed before its file is written")

        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.key_files(), sorted(names))
        self.assertEqual(e.manifest(), sorted(names))

        # Now cut the set down to 18 domains (the maps shrink by 40%, within
        # max_shrink) and kill the run among the removals.
        keep = 18
        e.sql("UPDATE domains SET active = 0 WHERE id > ?", (keep,))
        self.killed_run(lambda ls: keep + 2 < len(ls) < self.N - 2)
        self.assert_consistent()
        left = e.key_files()
        self.assertTrue(set(names[:keep]) <= set(left) and len(left) < self.N, left)
        r = self.once()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.key_files(), sorted(names[:keep]))
        self.assertEqual(e.manifest(), sorted(names[:keep]))


if __name__ == "__main__":
    harness.main()
