#!/usr/bin/env python3
"""Fault 8, symlinks: an attacker turns an output path into a symlink to
another file. mapsyncd replaces the link itself and never writes through
it, nor changes the target's mode or owner; the target is unchanged. A
temporary file name that already exists is never reused: temporary files
are created with O_CREAT|O_EXCL (seen with strace), a fresh name each
time, and planted look-alikes are left alone."""

import os
import re
import shutil
import signal
import stat
import subprocess

import faultlib
from faultlib import MAPS, harness, read, wait_for

VICTIM_TEXT = b"precious: not a map\n"


class Symlink(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 60}

    def victim(self, content=VICTIM_TEXT, mode=0o600):
        path = os.path.join(self.env.dir, "victim-%d" % len(os.listdir(self.env.dir)))
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, mode)
        os.utime(path, (1000000000, 1000000000))
        st = os.stat(path)
        return path, (content, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)

    def assert_victim_untouched(self, path, state):
        st = os.stat(path)
        self.assertEqual((read(path, "rb"), st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns), state,
                         "the symlink's target was written or changed")

    def plant_link(self, m, target):
        link = self.env.output(m)
        tmp = link + ".attacker"
        os.symlink(target, tmp)
        os.rename(tmp, link)
        self.assertTrue(os.path.islink(link))

    def assert_regular(self, m):
        st = os.lstat(self.env.output(m))
        self.assertTrue(stat.S_ISREG(st.st_mode), "%s is not a regular file" % m)

    def test_daemon_replaces_the_link_on_a_change(self):
        d = self.start(sync=faultlib.FAST)
        self.wait_maps_match_db()
        path, state = self.victim()
        self.plant_link("vmailbox", path)
        harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET active = 0 WHERE id = 1")
        wait_for(lambda: not os.path.islink(self.env.output("vmailbox")), 10,
                 what="the link to be replaced; log:\n" + self.dump(d))
        self.wait_maps_match_db()
        self.assert_regular("vmailbox")
        self.assert_victim_untouched(path, state)
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_link_to_a_file_equal_to_the_map(self):
        # The target holds exactly the map's content, with another mode: the
        # link is still replaced (never "unchanged" through a link) and the
        # target's mode is not "corrected".
        d = self.start(sync=faultlib.FAST)
        self.wait_maps_match_db()
        path, state = self.victim(read(self.env.output("passwd"), "rb"), mode=0o604)
        self.plant_link("passwd", path)
        n = len(d.log())
        d.signal(signal.SIGUSR1)
        d.wait_log(r"^sync: ", count=len(self.sync_lines(d)) + 1)
        self.assertFalse(os.path.islink(self.env.output("passwd")), "\n".join(d.log()[n:]))
        self.assert_regular("passwd")
        self.assertEqual(stat.S_IMODE(os.stat(self.env.output("passwd")).st_mode), 0o640)
        self.assert_victim_untouched(path, state)
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_once_replaces_links(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        victims = {}
        for m in MAPS:
            victims[m] = self.victim()
            self.plant_link(m, victims[m][0])
        # Also a dangling link: nothing may be created at its target.
        os.unlink(self.env.output("virtual_domains"))
        dangling = os.path.join(self.env.dir, "created-through-link")
        os.symlink(dangling, self.env.output("virtual_domains"))
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        for m in MAPS:
            self.assert_regular(m)
        for m in ("vmailbox", "virtual_aliases", "passwd"):
            self.assert_victim_untouched(*victims[m])
        self.assertFalse(os.path.lexists(dangling))
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_temporary_names_never_reused(self):
        if not shutil.which("strace"):
            self.skipTest("strace is not installed")
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        # Look-alikes of temporary files planted by an attacker: a link to a
        # victim and a plain file.
        path, state = self.victim()
        planted_link = os.path.join(self.env.out, ".vmailbox.AAAAAA")
        os.symlink(path, planted_link)
        planted_file = os.path.join(self.env.out, ".passwd.BBBBBB")
        with open(planted_file, "w") as f:
            f.write("planted\n")
        names = []
        for i in range(5):
            harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = %d WHERE id = 1" % (3000 + i))
            harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET active = %d WHERE id = 4" % (i % 2))
            trace = os.path.join(self.env.dir, "strace-%d" % i)
            # LeakSanitizer cannot work under ptrace (the ASan build).
            e = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
            r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,open,creat", "-o", trace,
                                harness.MAPSYNCD, "-c", self.env.conf, "--once"], capture_output=True, text=True,
                               timeout=120, env=e)
            self.assertEqual(r.returncode, 0, r.stderr)
            created = set()
            for line in read(trace).splitlines():
                # Relative to the output's directory (openat on its fd).
                mt = re.search(r'open(?:at)?\((?:AT_FDCWD, |\d+, )?"((?:[^"]*/)?\.(vmailbox|passwd)\.[^"/]+)", ([A-Z_|]+)',
                               line)
                if not mt:
                    continue
                flags = mt.group(3).split("|")
                name = os.path.join(self.env.out, os.path.basename(mt.group(1)))
                if "O_CREAT" not in flags:
                    # Reopened for the commit: only a name this run created.
                    self.assertIn(name, created, line)
                    continue
                self.assertIn("O_EXCL", flags, line)
                created.add(name)
                names.append(name)
        self.assertGreaterEqual(len(names), 10, "temporary files not seen in the traces")
        self.assertEqual(len(set(names)), len(names), "a temporary name was used twice: %r" % names)
        self.assertNotIn(planted_link, names)
        self.assertNotIn(planted_file, names)
        self.assertTrue(os.path.islink(planted_link))
        # A regular file of mapsyncd's user under a temporary name is, for
        # all mapsyncd can tell, its own leftover: swept at the start.
        self.assertFalse(os.path.lexists(planted_file))
        self.assert_victim_untouched(path, state)
        self.assert_maps_equal(harness.expected_maps(self.env.db))


if __name__ == "__main__":
    faultlib.main()
