#!/usr/bin/env python3
"""Fault 2, disk full: the maps live on a small tmpfs that is then filled
up. The old files stay intact, the error names the file and ENOSPC ("No
space left on device"), nothing is left behind (the temporary file is
removed), and once space is freed the next change syncs. Needs root (to
mount the tmpfs)."""

import errno
import os
import subprocess
import sys

import faultlib
from faultlib import MAPS, harness, read

TMPFS_SIZE = "1m"
INODES = 64


class DiskFull(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 300}

    def setUp(self):
        if not faultlib.is_root():
            self.skipTest("mounting a tmpfs needs root")
        super().setUp()
        self.mounted = False
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,nr_inodes=%d,mode=0755" % (TMPFS_SIZE, INODES),
                            "mapsyncd-fault",
                            self.env.out], capture_output=True, text=True)
        if r.returncode != 0:
            self.env.cleanup()
            self.skipTest("cannot mount a tmpfs: " + r.stderr.strip())
        self.mounted = True
        self.filler = os.path.join(self.env.out, "filler")

    def tearDown(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.kill()
        if getattr(self, "mounted", False):
            if subprocess.run(["umount", self.env.out]).returncode != 0:
                subprocess.run(["umount", "-l", self.env.out])
        super().tearDown()

    def fill(self, leave=0):
        """Fills the tmpfs up, then frees `leave` bytes again."""
        chunk = b"\0" * 4096
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        finally:
            os.close(fd)
        if leave:
            size = os.path.getsize(self.filler)
            os.truncate(self.filler, max(0, size - leave))
        st = os.statvfs(self.env.out)
        return st.f_bavail * st.f_frsize

    def snapshot(self):
        return {m: (read(self.env.output(m), "rb"), os.stat(self.env.output(m)).st_ino) for m in MAPS}

    def change(self, n):
        """A change that grows vmailbox and passwd."""
        harness.sqlite_cli(self.env.db, "INSERT INTO email_accounts (domain_id, email, username, password, quota) "
                           "VALUES (1, 'full%d@d0001.example', 'full%d', '%s', 4096)"
                           % (n, n, harness.gendb.TEST_HASHES[2]))

    def assert_enospc_reported(self, lines, maps):
        for m in maps:
            hits = [line for line in lines if self.env.output(m) in line and "No space left on device" in line]
            self.assertTrue(hits, "no error naming %s and ENOSPC:\n%s" % (self.env.output(m), "\n".join(lines)))

    def check_full_disk(self, leave):
        self.env.write_config(sync=faultlib.FAST)
        d = self.daemon()
        d.wait_ready()
        self.wait_maps_match_db()
        before = self.snapshot()
        free = self.fill(leave)
        n_log = len(d.log())
        self.change(1)
        d.wait_log(r"sync: 0 changed, \d+ unchanged, 2 failed", timeout=20)
        lines = d.log()[n_log:]
        self.assert_enospc_reported(lines, ("vmailbox", "passwd"))
        # The old files are intact (same bytes, same inode), the daemon lives,
        # and no temporary file is left (only the maps and the filler).
        self.assertEqual(self.snapshot(), before)
        self.assertIsNone(d.proc.poll())
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(list(MAPS) + ["filler"]))
        # Failures are retried, and say so again; still nothing left behind.
        d.wait_log(r"sync: 0 changed, \d+ unchanged, 2 failed", count=2, timeout=20)
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(list(MAPS) + ["filler"]))
        self.assertEqual(self.snapshot(), before)
        # Space freed: the next change syncs.
        os.unlink(self.filler)
        self.change(2)
        self.wait_maps_match_db()
        self.assert_no_temp_files()
        self.assertEqual(d.stop(), 0)
        print("free space while full: %d bytes" % free, file=sys.stderr)

    def test_no_space_at_all(self):
        self.check_full_disk(0)

    def test_space_runs_out_in_the_middle_of_a_file(self):
        # Room for part of vmailbox (about 15 kB) and of passwd (about 35 kB).
        self.check_full_disk(8192)

    def test_no_inode_left(self):
        # The temporary file itself cannot be created.
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = self.snapshot()
        n = 0
        try:
            while True:
                open(os.path.join(self.env.out, "inode-%05d" % n), "w").close()
                n += 1
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        self.change(1)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assert_enospc_reported(r.stderr.splitlines(), ("vmailbox", "passwd"))
        self.assertEqual(self.snapshot(), before)
        for i in range(n):
            os.unlink(os.path.join(self.env.out, "inode-%05d" % i))
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_no_temp_files()
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_once(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = self.snapshot()
        self.fill(4096)
        self.change(1)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assert_enospc_reported(r.stderr.splitlines(), ("vmailbox", "passwd"))
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(list(MAPS) + ["filler"]))
        os.unlink(self.filler)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_no_temp_files()
        self.assert_maps_equal(harness.expected_maps(self.env.db))


if __name__ == "__main__":
    faultlib.main()
