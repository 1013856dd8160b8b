#!/usr/bin/env python3
"""mapsyncd --once on real SQLite files: what it writes, what it leaves
alone, which hooks it runs, and how it fails."""

import hashlib
import os
import stat

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


if __name__ == "__main__":
    harness.main()
