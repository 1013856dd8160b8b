#!/usr/bin/env python3
"""mapsyncd --once on real SQLite files: what it writes, what it leaves
alone, which hooks it runs, and how it fails."""

import hashlib
import os
import re
import sqlite3
import stat
import time

import harness
from harness import MAPS, read


class FirstRun(harness.TestCase):
    ENV_ARGS = {"accounts": 200}

    def test_writes_the_four_maps_exactly(self):
        self.env.write_config()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_maps_match_db()
        # Each map's hook ran once, with the hash of what is in the file.
        runs = {name: (sha, rows) for name, sha, rows in self.env.hooks_run()}
        self.assertEqual(sorted(runs), sorted(MAPS))
        for m in MAPS:
            data = read(self.env.output(m), "rb")
            self.assertEqual(runs[m][0], hashlib.sha256(data).hexdigest())
            self.assertEqual(int(runs[m][1]), data.count(b"\n"))

    def test_fixed_facts_of_the_generated_database(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        g = harness.gendb
        vmailbox = read(self.env.output("vmailbox"))
        self.assertIn("%s\t%s/%s/\n" % (g.ACTIVE_ACCOUNT, g.ACTIVE_DOMAIN, g.ACTIVE_ACCOUNT.split("@")[0]),
                      vmailbox)
        for absent in (g.INACTIVE_ACCOUNT, g.INACTIVE_DOMAIN_ACCOUNT):
            self.assertNotIn(absent, vmailbox)
            self.assertNotIn(absent + ":", read(self.env.output("passwd")))
        aliases = read(self.env.output("virtual_aliases"))
        self.assertIn("%s\t%s\n" % (g.MULTI_ALIAS, ", ".join(g.MULTI_ALIAS_DESTINATIONS)), aliases)
        self.assertNotIn(g.INACTIVE_ALIAS + "\t", aliases)
        self.assertNotIn(g.INACTIVE_DOMAIN_ALIAS + "\t", aliases)
        self.assertIn("%s:{BLF-CRYPT}%s::::::userdb_quota_rule=*:storage=%dM\n"
                      % (g.ACTIVE_ACCOUNT, g.ACTIVE_ACCOUNT_HASH, g.ACTIVE_ACCOUNT_QUOTA),
                      read(self.env.output("passwd")))
        self.assertNotIn(g.INACTIVE_DOMAIN + "\t", read(self.env.output("virtual_domains")))

    def test_modes_and_group_applied(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        import grp
        gid = grp.getgrnam(harness.TEST_GROUP).gr_gid
        st = os.stat(self.env.output("passwd"))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.assertEqual(st.st_gid, gid)
        st = os.stat(self.env.output("vmailbox"))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o644)
        self.assertEqual(st.st_gid, 0)


class SecondRun(harness.TestCase):
    """What a run does when little or nothing changed."""

    def setUp(self):
        super().setUp()
        self.env.write_config()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.before = self.env.stat_outputs()
        os.unlink(self.env.hook_log)

    def test_nothing_changed_touches_nothing(self):
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.env.stat_outputs()
        for m in MAPS:
            self.assertEqual((after[m].st_ino, after[m].st_mtime_ns, after[m].st_ctime_ns),
                             (self.before[m].st_ino, self.before[m].st_mtime_ns, self.before[m].st_ctime_ns), m)
        self.assertEqual(self.env.hooks_run(), [])
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(MAPS), "temporary files left behind")

    def test_alias_change_rewrites_only_virtual_aliases(self):
        g = harness.gendb
        self.env.sql("UPDATE aliases SET destination = 'moved@external.example' WHERE source = ? "
                     "AND destination = ?", (g.MULTI_ALIAS, g.MULTI_ALIAS_DESTINATIONS[0]))
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.env.stat_outputs()
        for m in MAPS:
            replaced = after[m].st_ino != self.before[m].st_ino
            self.assertEqual(replaced, m == "virtual_aliases", m)
        self.assertEqual([h[0] for h in self.env.hooks_run()], ["virtual_aliases"])
        self.assert_maps_match_db()
        # A changed file's mtime is the time of its replacement: not
        # before the old one, never in the future.
        self.assertGreaterEqual(after["virtual_aliases"].st_mtime_ns, self.before["virtual_aliases"].st_mtime_ns)
        self.assertLessEqual(after["virtual_aliases"].st_mtime, time.time())

    def test_update_of_unrendered_column_writes_nothing(self):
        self.env.sql("UPDATE email_accounts SET updated_at = '2030-01-01 00:00:00'")
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.env.stat_outputs()
        self.assertEqual({m: s.st_ino for m, s in after.items()}, {m: s.st_ino for m, s in self.before.items()})
        self.assertEqual(self.env.hooks_run(), [])


class Hooks(harness.TestCase):

    def test_reload_named_by_two_changed_maps_runs_once(self):
        log = os.path.join(self.env.dir, "reloads.log")
        text = self.env.shipped_config(map_extra={"vmailbox": "reload = both", "passwd": "reload = both"})
        text += "\n[reload both]\ncommand = echo \"reload $MAPSYNCD_RELOAD for $MAPSYNCD_MAP\" >> %s\n" % log
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(log), "reload both for vmailbox passwd\n")
        # The reload runs after every on_change hook.
        self.assertEqual(len(self.env.hooks_run()), 4)
        # Only passwd changes now: the reload runs once more, for passwd alone.
        self.env.sql("UPDATE email_accounts SET password = ? WHERE email = ?",
                     (harness.gendb.ROTATE_HASHES[0], harness.gendb.ACTIVE_ACCOUNT))
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assertEqual(read(log), "reload both for vmailbox passwd\nreload both for passwd\n")

    def test_failing_hook_gives_exit_1_and_map_is_replaced(self):
        text = re.sub(r"(?m)^(on_change = .*)$", r"\1; exit 1", self.env.shipped_config(), count=1)
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("virtual_domains: hook failed with exit status 1", r.stderr)
        self.assert_maps_match_db()
        # The failed hook stays owed: the next run retries it although
        # nothing changed, and the others are not run again.
        self.env.write_config()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("hooks owed by an earlier run", r.stderr)
        self.assertEqual([h[0] for h in self.env.hooks_run()],
                         ["virtual_domains", "vmailbox", "virtual_aliases", "passwd", "virtual_domains"])
        r = self.env.run("--once")
        self.assertEqual(len(self.env.hooks_run()), 5, "a hook that succeeded is owed nothing")

    def test_hook_past_timeout_is_killed(self):
        marker = os.path.join(self.env.dir, "survived")
        text = self.env.shipped_config(sync={"hook_timeout_s": "1"})
        text = text.replace("on_change = echo \"$MAPSYNCD_MAP",
                            "on_change = sleep 30; touch %s; echo \"$MAPSYNCD_MAP" % marker, 1)
        self.env.write_config(text)
        r = self.env.run("--once", timeout=60)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("virtual_domains: hook timed out", r.stderr)
        self.assertFalse(os.path.exists(marker))

    def test_hook_environment_and_output(self):
        text = self.env.shipped_config()
        text = text.replace("on_change = echo \"$MAPSYNCD_MAP",
                            "on_change = echo out-$MAPSYNCD_MAP; echo err >&2; echo \"$MAPSYNCD_MAP", 1)
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("virtual_domains: hook: out-virtual_domains", r.stderr)
        self.assertIn("virtual_domains: hook: err", r.stderr)


class Failures(harness.TestCase):

    def test_bad_sql_in_one_map_leaves_the_others_written(self):
        text = self.env.shipped_config().replace("SELECT domain, 'OK' FROM domains", "SELECT domain, 'OK' FROM nowhere")
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("virtual_domains: query failed: no such table: nowhere", r.stderr)
        self.assertFalse(os.path.exists(self.env.output("virtual_domains")))
        want = harness.expected_maps(self.env.db)
        for m in ("vmailbox", "virtual_aliases", "passwd"):
            self.assertEqual(read(self.env.output(m)), want[m])
        self.assertEqual(sorted(h[0] for h in self.env.hooks_run()), ["passwd", "virtual_aliases", "vmailbox"])

    def test_three_columns_named_as_an_error(self):
        text = self.env.shipped_config().replace("SELECT domain, 'OK' FROM domains", "SELECT domain, 'OK', 1 FROM domains")
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("virtual_domains: query failed: the query must return exactly two columns", r.stderr)

    def test_missing_database_keeps_existing_files(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = {m: (read(self.env.output(m)), os.stat(self.env.output(m)).st_ino) for m in MAPS}
        os.rename(self.env.db, self.env.db + ".away")
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("database %s unavailable: no such file" % self.env.db, r.stderr)
        self.assertEqual({m: (read(self.env.output(m)), os.stat(self.env.output(m)).st_ino) for m in MAPS}, before)
        self.assertFalse(os.path.exists(self.env.db), "a read-only open must not create the database")

    def test_output_directory_missing(self):
        text = self.env.shipped_config().replace(self.env.out + "/vmailbox", self.env.dir + "/nodir/vmailbox")
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("vmailbox: Could not open the directory %s/nodir of %s/nodir/vmailbox: "
                      "No such file or directory" % (self.env.dir, self.env.dir), r.stderr)
        self.assertTrue(os.path.exists(self.env.output("passwd")))

    def test_on_invalid_fail_keeps_old_file(self):
        self.env.write_config(map_extra={})
        text = self.env.shipped_config().replace("[map virtual_aliases]\n", "[map virtual_aliases]\n", 1)
        text = text.replace("on_invalid = skip\non_change = echo \"$MAPSYNCD_MAP $MAPSYNCD_SHA256 $MAPSYNCD_ROWS\" >> %s\n\n# Dovecot"
                            % self.env.hook_log, "on_invalid = fail\non_change = true\n\n# Dovecot")
        self.assertIn("on_invalid = fail", text)
        self.env.write_config(text)
        self.assertEqual(self.env.run("--once").returncode, 0)
        old = read(self.env.output("virtual_aliases"))
        self.env.sql("INSERT INTO aliases (domain_id, source, destination, active) VALUES (1, ?, ?, 1)",
                     ("new@d0001.example", "x@y\nevil@d0001.example z"))
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("virtual_aliases: 1 invalid rows and on_invalid = fail", r.stderr)
        self.assertEqual(read(self.env.output("virtual_aliases")), old)


class Hostile(harness.TestCase):
    ENV_ARGS = {"hostile": True}

    def test_no_row_injects_a_line(self):
        self.env.write_config()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("skipped row with key", r.stderr)
        g = harness.gendb
        for m in MAPS:
            data = read(self.env.output(m), "rb")
            self.assertTrue(data.endswith(b"\n"))
            sep = b":" if m == "passwd" else b"\t"
            for line in data.split(b"\n")[:-1]:
                key, _, value = line.partition(sep)
                self.assertTrue(key and value, (m, line))
                self.assertFalse(any(c <= 0x20 or c == 0x7f for c in key), (m, line))
                self.assertFalse(any(c < 0x20 or c == 0x7f for c in value), (m, line))
                self.assertFalse(key.startswith(b"#"), (m, line))
                self.assertEqual(key, key.lower(), (m, line))
        aliases = read(self.env.output("virtual_aliases"))
        self.assertNotIn("evil", aliases)
        self.assertNotIn(g.VICTIM, read(self.env.output("vmailbox")))


class DatabaseUntouched(harness.TestCase):

    def check_untouched(self):
        self.env.write_config()
        files = sorted(os.listdir(self.env.db_dir))
        before = read(self.env.db, "rb")
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(self.env.db, "rb"), before)
        # A WAL reader opens (and may create) the -shm and an empty -wal,
        # as every SQLite reader does; nothing else appears, nothing grows.
        for f in os.listdir(self.env.db_dir):
            if f not in files:
                self.assertIn(f, ("database.sqlite-wal", "database.sqlite-shm"))
        if os.path.exists(self.env.db + "-wal"):
            self.assertEqual(os.path.getsize(self.env.db + "-wal"), 0)
        self.assert_maps_match_db()

    def test_wal(self):
        self.check_untouched()


class DatabaseUntouchedRollback(DatabaseUntouched):
    ENV_ARGS = {"journal": "delete"}

    def test_wal(self):
        # A rollback-journal database stays one: reading it neither
        # switches it to WAL nor leaves a -wal or -shm behind, twice over
        # (the second run finds the maps in place).
        for _ in range(2):
            self.check_untouched()
            for suffix in ("-wal", "-shm"):
                self.assertFalse(os.path.exists(self.env.db + suffix), suffix)
            c = sqlite3.connect("file:%s?mode=ro" % self.env.db, uri=True)
            try:
                self.assertEqual(c.execute("PRAGMA journal_mode").fetchone()[0], "delete")
            finally:
                c.close()

    def test_rollback_journal(self):
        self.check_untouched()
        self.assertFalse(os.path.exists(self.env.db + "-journal"))


class DryRunAndCheck(harness.TestCase):

    def test_dry_run_writes_nothing_and_shows_no_hash(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = self.env.stat_outputs()
        os.unlink(self.env.hook_log)
        g = harness.gendb
        self.env.sql("UPDATE email_accounts SET password = ? WHERE email = ?", (g.ROTATE_HASHES[0], g.ACTIVE_ACCOUNT))
        self.env.sql("INSERT INTO aliases (domain_id, source, destination, active) VALUES (1, 'n@d0001.example', 'x@y', 1)")
        r = self.env.run("--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("passwd: would change: +1 -1 lines", r.stdout)
        self.assertIn("virtual_aliases: would change: +1 -0 lines", r.stdout)
        self.assertRegex(r.stdout, r"vmailbox: unchanged \(\d+ rows\)")
        self.assertNotIn("$2y$", r.stdout + r.stderr)
        self.assertNotRegex(r.stdout + r.stderr, r"[0-9a-f]{64}")
        self.assertEqual({m: s.st_ino for m, s in self.env.stat_outputs().items()},
                         {m: s.st_ino for m, s in before.items()})
        self.assertEqual(self.env.hooks_run(), [])
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(MAPS))

    def test_check_ok(self):
        self.env.write_config()
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK: 4 maps", r.stdout)

    def test_check_reports_every_problem(self):
        text = self.env.shipped_config()
        text = text.replace("SELECT domain, 'OK' FROM domains", "SELECT domain, 'OK' FROM nowhere")
        text = text.replace(self.env.out + "/vmailbox", self.env.dir + "/nodir/vmailbox")
        self.env.write_config(text)
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 1)
        lines = r.stderr.splitlines()
        self.assertTrue(any("[map virtual_domains] query: no such table: nowhere" in l for l in lines), r.stderr)
        self.assertTrue(any("[map vmailbox] cannot write into the directory" in l for l in lines), r.stderr)
        for l in lines:
            self.assertRegex(l, r"^%s:\d+: " % self.env.conf)

    def test_broken_config_lists_every_error_and_exits_78(self):
        text = self.env.shipped_config()
        text = text.replace("debounce_ms = 200", "debounce_ms = soon")
        text = text.replace("format = passwd", "format = shadow")
        text += "\n[mystery]\nx = 1\n"
        self.env.write_config(text)
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 78)
        self.assertRegex(r.stderr, r"mapsyncd.conf:\d+: debounce_ms = soon is not a whole number")
        self.assertRegex(r.stderr, r"mapsyncd.conf:\d+: format = shadow: expected postfix or passwd")
        self.assertRegex(r.stderr, r"mapsyncd.conf:\d+: unknown section \[mystery\]")

    def test_usage_errors_exit_2(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once", "--check").returncode, 2)
        self.assertEqual(self.env.run("--bogus").returncode, 2)


if __name__ == "__main__":
    harness.main()
