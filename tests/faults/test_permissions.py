#!/usr/bin/env python3
"""Fault 9, permissions and state: a configuration file or state_dir that
other users may write is refused with a clear message (the commands in
them run as mapsyncd's user); a corrupt state file is warned about and
ignored, and hooks run all the same."""

import os
import pwd
import signal

import faultlib
from faultlib import harness, read, wait_for

REFUSED = r"cannot use configuration: writable by others"


def nobody():
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


class Config(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 40}

    def assert_refused(self, r):
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertRegex(r.stderr, REFUSED)
        self.assertIn(self.env.conf, r.stderr)
        self.assertEqual(os.listdir(self.env.out), [], "something was written with a refused configuration")

    def test_world_writable(self):
        self.env.write_config()
        os.chmod(self.env.conf, 0o666)
        for args in (("--once",), ("--check",), ("--dry-run",)):
            self.assert_refused(self.env.run(*args))
        # The daemon refuses to start.
        r = self.env.run(timeout=30)
        self.assert_refused(r)
        os.chmod(self.env.conf, 0o644)
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_group_writable(self):
        self.env.write_config()
        os.chmod(self.env.conf, 0o664)
        self.assert_refused(self.env.run("--once"))
        os.chmod(self.env.conf, 0o640)
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_owned_by_another_user(self):
        if not faultlib.is_root():
            self.skipTest("chown needs root")
        self.env.write_config()
        os.chown(self.env.conf, nobody(), -1)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn(self.env.conf, r.stderr)
        self.assertRegex(r.stderr, r"not owned by root or this user|owner")
        os.chown(self.env.conf, 0, -1)
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_sighup_with_a_writable_config_keeps_the_old_one(self):
        d = self.start(sync=faultlib.FAST)
        self.wait_maps_match_db()
        # Someone makes the file writable and slips a command in.
        evil = os.path.join(self.env.dir, "evil-ran")
        text = harness.config_with_hook(self.env, "touch " + evil, sync=faultlib.FAST)
        with open(self.env.conf, "w") as f:
            f.write(text)
        os.chmod(self.env.conf, 0o666)
        d.signal(signal.SIGHUP)
        d.wait_log(r"not reloaded|ignored; still running the previous one")
        self.assertTrue([line for line in d.log() if "writable by others" in line and self.env.conf in line],
                        self.dump(d))
        harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 1111 WHERE id = 1")
        self.wait_maps_match_db()
        wait_for(lambda: any(h[0] == "passwd" for h in self.env.hooks_run()[4:]), 10,
                 what="the old configuration's hook")
        self.assertFalse(os.path.exists(evil), "a command from the refused configuration ran")
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))


class StateDir(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 40}

    def plant(self, text, mode=0o700):
        os.makedirs(self.env.state, exist_ok=True)
        os.chmod(self.env.state, mode)
        path = os.path.join(self.env.state, "owed-hooks")
        with open(path, "wb") as f:
            f.write(text)
        return path

    def test_writable_state_dir_is_refused(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        os.unlink(self.env.hook_log)
        # Another user could write owed-hooks here: make hooks run at will.
        self.plant(b"map vmailbox\nmap passwd\n", mode=0o777)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r"state_dir %s is writable by others" % self.env.state)
        self.assertEqual(self.env.hooks_run(), [], "hooks named in a refused state_dir ran")
        # Syncing and hooks go on without it.
        harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 2222 WHERE id = 1")
        d = self.daemon()
        d.wait_ready()
        self.wait_maps_match_db()
        wait_for(lambda: [h[0] for h in self.env.hooks_run()] == ["passwd"], 10,
                 what="the changed map's hook; log:\n" + self.dump(d))
        self.assertTrue([line for line in d.log() if "writable by others" in line], self.dump(d))
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_check_reports_a_writable_state_dir(self):
        self.env.write_config()
        os.makedirs(self.env.state, exist_ok=True)
        os.chmod(self.env.state, 0o777)
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 1, "--check found no problem with a world-writable state_dir:\n"
                         + r.stdout + r.stderr)
        self.assertIn(self.env.state, r.stderr)
        os.chmod(self.env.state, 0o700)
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def check_corrupt_state(self, daemon):
        self.env.write_config(sync=faultlib.FAST)
        self.assertEqual(self.env.run("--once").returncode, 0)
        os.unlink(self.env.hook_log)
        junk = (b"\x00\x01garbage\xff\xfe\n"
                b"map\n"
                b"map \n"
                b"map no-such-map\n"
                b"reload no-such-reload\n"
                b"map passwd trailing\n"
                b"map pass\x00wd\n"
                + b"x" * 100000 + b"\n"
                b"map passwd\n"
                b"\xc3\x28 not utf-8\n"
                b"map vmailbox")  # no final newline
        path = self.plant(junk)
        if daemon:
            d = self.daemon()
            d.wait_ready()
            log = d.log()
        else:
            r = self.env.run("--once")
            self.assertEqual(r.returncode, 0, r.stderr)
            log = r.stderr.splitlines()
        warnings = [line for line in log if line.startswith("warning: ") and path in line]
        self.assertGreaterEqual(len(warnings), 5, "\n".join(log))
        # The valid lines among the junk still count: their hooks run.
        wait_for(lambda: sorted(h[0] for h in self.env.hooks_run()) == ["passwd", "vmailbox"], 10,
                 what="the owed hooks; log:\n" + "\n".join(log))
        for m, sha, rows in self.env.hooks_run():
            self.assertEqual(sha, faultlib.sha256(read(self.env.output(m), "rb")))
        wait_for(lambda: not os.path.exists(path), 10, what="the state file to be cleared")
        if daemon:
            harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 3333 WHERE id = 1")
            self.wait_maps_match_db()
            wait_for(lambda: len(self.env.hooks_run()) == 3, 10, what="the next change's hook")
            self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_corrupt_state_file_once(self):
        self.check_corrupt_state(daemon=False)

    def test_corrupt_state_file_daemon(self):
        self.check_corrupt_state(daemon=True)

    def test_state_file_that_is_all_junk(self):
        self.env.write_config(sync=faultlib.FAST)
        self.assertEqual(self.env.run("--once").returncode, 0)
        os.unlink(self.env.hook_log)
        self.plant(os.urandom(65536))
        d = self.daemon()
        d.wait_ready()
        self.assertEqual(self.env.hooks_run(), [])
        harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 4444 WHERE id = 1")
        self.wait_maps_match_db()
        wait_for(lambda: [h[0] for h in self.env.hooks_run()] == ["passwd"], 10, what="the change's hook")
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))


if __name__ == "__main__":
    faultlib.main()
