#!/usr/bin/env python3
"""meson install into a DESTDIR: the complete tree, and an existing
configuration kept."""

import os
import subprocess
import tempfile
import shutil

import harness

BUILD = os.environ.get("MAPSYNCD_BUILD_ROOT", os.path.join(harness.SRC, "build"))


class Install(harness.TestCase):

    def install(self, destdir):
        r = subprocess.run(["meson", "install", "--no-rebuild", "-C", BUILD, "--destdir", destdir],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_tree(self):
        dest = tempfile.mkdtemp(prefix="mapsyncd-destdir-")
        self.addCleanup(shutil.rmtree, dest, True)
        self.install(dest)
        files = set()
        for root, _, names in os.walk(dest):
            for n in names:
                files.add(os.path.relpath(os.path.join(root, n), dest))
        prefix = subprocess.run(["meson", "introspect", "--buildoptions", BUILD], capture_output=True,
                                text=True).stdout
        import json
        opts = {o["name"]: o["value"] for o in json.loads(prefix)}
        p, sysconf = opts["prefix"].lstrip("/"), opts["sysconfdir"]
        etc = sysconf.lstrip("/") if sysconf.startswith("/") else os.path.join(p, sysconf)
        want = {
            os.path.join(p, opts["sbindir"], "mapsyncd"),
            os.path.join(etc, "mapsyncd", "mapsyncd.conf"),
            os.path.join(p, opts["mandir"], "man8", "mapsyncd.8"),
            os.path.join(p, opts["mandir"], "man5", "mapsyncd.conf.5"),
        }
        self.assertTrue(want <= files, "missing: %s; installed: %s" % (sorted(want - files), sorted(files)))
        self.assertTrue(any(f.endswith("systemd/system/mapsyncd.service") for f in files), sorted(files))
        self.assertTrue(any(f.endswith("systemd/system/mapsyncd@.service") for f in files), sorted(files))
        self.assertTrue(any(f.endswith("systemd/system/mapsyncd.socket") for f in files), sorted(files))
        exe = os.path.join(dest, p, opts["sbindir"], "mapsyncd")
        self.assertTrue(os.access(exe, os.X_OK))
        r = subprocess.run([exe, "--version"], capture_output=True, text=True)
        self.assertRegex(r.stdout, r"^mapsyncd \d+\.\d+")
        conf = os.path.join(dest, etc, "mapsyncd", "mapsyncd.conf")
        self.assertEqual(harness.read(conf), harness.read(os.path.join(harness.SRC, "conf", "mapsyncd.conf")))
        self.assertEqual(os.stat(conf).st_mode & 0o777, 0o644)

        # An operator's edit survives the next install.
        with open(conf, "a") as f:
            f.write("# edited\n")
        self.install(dest)
        self.assertTrue(harness.read(conf).endswith("# edited\n"))


if __name__ == "__main__":
    harness.main()
