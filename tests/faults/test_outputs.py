#!/usr/bin/env python3
"""Outputs that cannot be turned against the host (issue 11): an output
that is the database, the configuration, a state or metrics file, or
another output (also through '..', a symlinked directory or a hard link) is
refused with FILE:LINE; relative paths are refused; leftover temporary
files of mapsyncd are swept at the start, and nothing else; an unreadable
current output is an error, not "absent"; a hard-linked map's metadata is
corrected by replacing it, never through the shared inode; setuid, setgid,
sticky and world-writable modes are refused; an output directory others
may write is refused; whitespace-only values are invalid; --check refuses a
query that writes or holds more than one statement; a second instance on
the same state refuses to start."""

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess

import faultlib
from faultlib import harness, read, wait_for


def nobody():
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def set_output(text, m, path):
    new, n = re.subn(r"(?m)^output = .*/%s$" % re.escape(m), "output = " + path, text)
    assert n == 1, m
    return new


def line_of(text, needle):
    for n, line in enumerate(text.splitlines(), 1):
        if line == needle:
            return n
    raise AssertionError("no line %r" % needle)


class Base(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 40}

    def assert_config_refused(self, text, needle, pattern, args=("--once",)):
        """The config is refused (exit 78) with CONF:LINE: pattern, where
        LINE is that of the line `needle`; nothing in out/ changes."""
        self.env.write_config(text)
        before = {n: os.lstat(os.path.join(self.env.out, n)).st_ino for n in os.listdir(self.env.out)}
        for a in args + ("--check",):
            r = self.env.run(a)
            self.assertEqual(r.returncode, 78, "%s: %s%s" % (a, r.stdout, r.stderr))
            self.assertRegex(r.stderr, re.escape("%s:%d: " % (self.env.conf, line_of(text, needle))) + ".*" + pattern)
        after = {n: os.lstat(os.path.join(self.env.out, n)).st_ino for n in os.listdir(self.env.out)}
        self.assertEqual(after, before, "something was written with a refused configuration")


class OutputIsProtected(Base):
    def db_fingerprint(self):
        return {p: faultlib.sha256(read(p, "rb")) for p in (self.env.db,) if os.path.exists(p)}

    def test_output_is_the_database(self):
        fp = self.db_fingerprint()
        for target, what in ((self.env.db, "the database"), (self.env.db + "-wal", "the database's write-ahead log"),
                             (self.env.db + "-shm", "the database's shared-memory file"),
                             (self.env.db + "-journal", "the database's rollback journal")):
            text = set_output(self.env.shipped_config(), "vmailbox", target)
            self.assert_config_refused(text, "output = " + target,
                                       re.escape("[map vmailbox] output = %s is %s" % (target, what)))
        self.assertEqual(self.db_fingerprint(), fp)
        # The database is still a database.
        self.assertEqual(harness.sqlite_cli(self.env.db, "SELECT count(*) FROM domains").strip() != "", True)

    def test_output_is_the_database_through_dotdot_and_a_symlinked_dir(self):
        fp = self.db_fingerprint()
        dotdot = os.path.join(self.env.out, "..", "db", os.path.basename(self.env.db))
        text = set_output(self.env.shipped_config(), "vmailbox", dotdot)
        self.assert_config_refused(text, "output = " + dotdot, re.escape("is the database %s" % self.env.db))
        link = os.path.join(self.env.dir, "dblink")
        os.symlink(self.env.db_dir, link)
        via = os.path.join(link, os.path.basename(self.env.db))
        text = set_output(self.env.shipped_config(), "passwd", via)
        self.assert_config_refused(text, "output = " + via, re.escape("is the database %s" % self.env.db))
        self.assertEqual(self.db_fingerprint(), fp)

    def test_output_is_a_hard_link_to_the_database(self):
        fp = self.db_fingerprint()
        alias = os.path.join(self.env.out, "innocent")
        os.link(self.env.db, alias)
        text = set_output(self.env.shipped_config(), "vmailbox", alias)
        self.assert_config_refused(text, "output = " + alias, r"is the database .*the same file under another name")
        self.assertEqual(self.db_fingerprint(), fp)

    def test_output_is_the_config_state_or_metrics_file(self):
        metrics = os.path.join(self.env.dir, "metrics.prom")
        state_file = os.path.join(self.env.state, "owed-hooks")
        base = self.env.shipped_config(sync={"metrics_file": metrics})
        cases = ((self.env.conf, "the configuration file"), (metrics, "the metrics file"),
                 (state_file, "a state file"))
        for target, what in cases:
            text = set_output(base, "virtual_domains", target)
            self.assert_config_refused(text, "output = " + target, re.escape("output = %s is %s" % (target, what)))
        # Anything in state_dir is mapsyncd's own.
        inside = os.path.join(self.env.state, "virtual_domains")
        text = set_output(base, "virtual_domains", inside)
        self.assert_config_refused(text, "output = " + inside, re.escape("is inside state_dir %s" % self.env.state))
        # metrics_file may not be the database either.
        text = self.env.shipped_config(sync={"metrics_file": self.env.db})
        self.assert_config_refused(text, "metrics_file = " + self.env.db,
                                   re.escape("metrics_file = %s is the database" % self.env.db))

    def test_two_maps_one_file(self):
        a = os.path.join(self.env.out, "vmailbox")
        b = os.path.join(self.env.out, "..", "out", "vmailbox")
        text = set_output(self.env.shipped_config(), "virtual_aliases", b)
        self.assert_config_refused(text, "output = " + b,
                                   re.escape("[map virtual_aliases] output = %s is the same path as the output of "
                                             "[map vmailbox]" % b))
        link = os.path.join(self.env.dir, "outlink")
        os.symlink(self.env.out, link)
        c = os.path.join(link, "vmailbox")
        text = set_output(self.env.shipped_config(), "virtual_aliases", c)
        self.assert_config_refused(text, "output = " + c, re.escape("is the same path as the output of [map vmailbox]"))
        # Hard links: two names, one file.
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        d = os.path.join(self.env.out, "aliases2")
        os.link(a, d)
        text = set_output(self.env.shipped_config(), "virtual_aliases", d)
        self.assert_config_refused(text, "output = " + d, r"is the same file as the output of \[map vmailbox\]")

    def test_relative_paths(self):
        text = self.env.shipped_config().replace("path = " + self.env.db, "path = db/database.sqlite")
        self.assert_config_refused(text, "path = db/database.sqlite",
                                   re.escape("path = db/database.sqlite is not an absolute path"))

    def test_resolved_again_at_reload(self):
        d = self.start(sync=faultlib.FAST)
        text = set_output(self.env.shipped_config(sync=faultlib.FAST), "vmailbox", self.env.db)
        fp = self.db_fingerprint()
        self.env.write_config(text)
        d.signal(signal.SIGHUP)
        d.wait_log(r"output = %s is the database" % re.escape(self.env.db))
        d.wait_log(r"has errors .*: ignored; still running the previous one")
        self.assertEqual(self.db_fingerprint(), fp)
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))


class Leftovers(Base):
    def test_only_own_temporary_files_swept(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        ours = [".vmailbox.Ab12Cd", ".passwd.zzzzzz", ".virtual_domains.000000"]
        foreign = [".vmailbox.short", ".vmailbox.toolong1", ".vmailbox.ab-cde", "vmailbox.Ab12Cd", ".other.Ab12Cd",
                   ".vmailbox.Ab12Cd.bak"]
        for n in ours + foreign:
            with open(os.path.join(self.env.out, n), "w") as f:
                f.write("x" * 1000)
        os.mkdir(os.path.join(self.env.out, ".vmailbox.dirdir"))
        victim = os.path.join(self.env.dir, "victim")
        with open(victim, "w") as f:
            f.write("victim\n")
        os.symlink(victim, os.path.join(self.env.out, ".passwd.linkkk"))
        theirs = os.path.join(self.env.out, ".vmailbox.nobody")
        with open(theirs, "w") as f:
            f.write("not ours\n")
        os.chown(theirs, nobody(), -1)
        state_tmp = os.path.join(self.env.state, ".owed-hooks.Qw3rty")
        with open(state_tmp, "w") as f:
            f.write("map vmailbox\n")
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        left = set(os.listdir(self.env.out))
        for n in ours:
            self.assertNotIn(n, left)
        for n in foreign + [".vmailbox.dirdir", ".passwd.linkkk", ".vmailbox.nobody"]:
            self.assertIn(n, left)
        self.assertFalse(os.path.exists(state_tmp))
        self.assertEqual(read(victim), "victim\n")
        self.assertRegex(r.stderr, r"removed 1 temporary file of %s left by an earlier run"
                         % re.escape(self.env.output("vmailbox")))
        self.assert_maps_equal(harness.expected_maps(self.env.db))


class Unreadable(Base):
    def test_unreadable_current_output_is_an_error(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        os.unlink(self.env.hook_log)
        self.env.sql("UPDATE email_accounts SET quota = quota + 1 WHERE id = 1")
        for err, name in ((13, "Permission denied"), (24, "Too many open files"), (5, "Input/output error")):
            before = os.stat(self.env.output("vmailbox"))
            env = harness.preload_env("FAIL_OPEN_SHIM", FAIL_OPEN_NAME="vmailbox", FAIL_OPEN_ERRNO=err)
            r = self.env.run("--once", env=env)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("vmailbox: Could not read the current %s: %s; kept it as it was"
                          % (self.env.output("vmailbox"), name), r.stderr)
            after = os.stat(self.env.output("vmailbox"))
            self.assertEqual((after.st_ino, after.st_mtime_ns), (before.st_ino, before.st_mtime_ns))
            self.assertNotIn("vmailbox", [h[0] for h in self.env.hooks_run()])
        self.assertIn("passwd", [h[0] for h in self.env.hooks_run()])
        self.assertFalse(faultlib.temp_files(self.env.out))


class Metadata(Base):
    def test_hard_link_not_followed_for_metadata(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        shadow = os.path.join(self.env.dir, "shadow-of-vmailbox")
        os.link(self.env.output("vmailbox"), shadow)
        st0 = os.stat(shadow)
        text = self.env.shipped_config().replace("[map vmailbox]\n", "[map vmailbox]\n", 1)
        text = re.sub(r"(\[map vmailbox\][^\[]*?)mode = 0644", r"\1mode = 0600", text, flags=re.S)
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        st1 = os.stat(shadow)
        self.assertEqual((st1.st_ino, stat.S_IMODE(st1.st_mode), st1.st_uid, st1.st_gid, st1.st_mtime_ns),
                         (st0.st_ino, stat.S_IMODE(st0.st_mode), st0.st_uid, st0.st_gid, st0.st_mtime_ns),
                         "the other name's file changed")
        st2 = os.stat(self.env.output("vmailbox"))
        self.assertNotEqual(st2.st_ino, st0.st_ino)
        self.assertEqual(stat.S_IMODE(st2.st_mode), 0o600)
        self.assertEqual(read(shadow), read(self.env.output("vmailbox")))

    def test_special_modes_refused(self):
        for mode, why in (("4777", "setuid, setgid and sticky bits are refused"),
                          ("2640", "setuid, setgid and sticky bits are refused"),
                          ("1644", "setuid, setgid and sticky bits are refused"),
                          ("0666", "a world-writable map is refused"), ("0602", "a world-writable map is refused")):
            # passwd is the one map of mode 0640.
            text = self.env.shipped_config().replace("mode = 0640", "mode = " + mode)
            self.assert_config_refused(text, "mode = " + mode, re.escape("mode = %s: %s" % (mode, why)))

    def test_untrusted_output_directory(self):
        shared = os.path.join(self.env.dir, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)
        text = set_output(self.env.shipped_config(), "vmailbox", os.path.join(shared, "vmailbox"))
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("vmailbox: refusing to write %s/vmailbox: %s is writable by others" % (shared, shared), r.stderr)
        self.assertEqual(os.listdir(shared), [])
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("%s is writable by others" % shared, r.stderr)
        # Sticky, as /tmp: others cannot rename what is not theirs.
        os.chmod(shared, 0o1777)
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assertEqual(os.listdir(shared), ["vmailbox"])
        # Owned by another user.
        os.chmod(shared, 0o755)
        os.chown(shared, nobody(), -1)
        self.env.sql("UPDATE email_accounts SET active = 1 - active WHERE id = 2")
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is owned by another user than root or this one", r.stderr)


class Values(Base):
    def test_whitespace_only_value_is_invalid(self):
        src = harness.sqlite_cli(self.env.db, "SELECT source FROM aliases WHERE active = 1 ORDER BY id LIMIT 1").strip()
        self.env.sql("UPDATE aliases SET destination = '   ' WHERE source = ?", (src,))
        self.env.write_config()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('skipped row with key "%s": value is only white space' % src, r.stderr)
        for line in read(self.env.output("virtual_aliases")).splitlines():
            self.assertTrue(line.split("\t", 1)[1].strip(" ,"), line)

    def test_check_refuses_writing_and_multiple_statements(self):
        base = self.env.shipped_config()
        for query, why in (("DELETE FROM domains RETURNING domain, 'OK'", "the query is not read-only"),
                           ("SELECT domain, 'OK' FROM domains; SELECT 1, 2", "the query holds more than one statement"),
                           ("SELECT domain, 'OK' FROM domains; DROP TABLE domains",
                            "the query holds more than one statement")):
            text = re.sub(r"(?m)^query = SELECT domain, 'OK' FROM domains WHERE active = 1$", "query = " + query, base)
            self.env.write_config(text)
            r = self.env.run("--check")
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("%s:%d: [map virtual_domains] query: %s" % (self.env.conf, line_of(text, "query = " + query),
                                                                      why), r.stderr)
        self.assertIn("domains", harness.sqlite_cli(self.env.db, "SELECT name FROM sqlite_master"))


class InstanceLock(Base):
    def test_second_instance_refused(self):
        d = self.start(sync=faultlib.FAST)
        self.wait_maps_match_db()
        os.unlink(self.env.hook_log)
        self.env.sql("UPDATE email_accounts SET quota = quota + 7")
        # --once on the same state: refused, naming the daemon.
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("another mapsyncd (PID %d) runs with state_dir %s" % (d.pid, self.env.state), r.stderr)
        self.assertIn("kill -USR1 %d" % d.pid, r.stderr)
        # A second daemon: refused too.
        r = self.env.run(timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("(PID %d)" % d.pid, r.stderr)
        # The hooks of the change ran once, by the daemon.
        wait_for(lambda: self.env.hooks_run(), what="the daemon's hooks")
        self.wait_maps_match_db()
        self.wait_quiet(d)
        names = [h[0] for h in self.env.hooks_run()]
        self.assertEqual(sorted(names), sorted(set(names)), "a hook ran twice")
        self.assertEqual(d.stop(), 0)
        # Once it is gone, --once runs.
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    faultlib.main()
