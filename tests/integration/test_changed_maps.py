#!/usr/bin/env python3
"""Only the maps whose tables changed are rendered, and that is exact: the
watching daemon on a WAL database that random commits change (random
tables, a table no map reads, checkpoints of every kind, VACUUM, schema
changes), and after every cycle every map equals a full rendering of the
database (the sorting query, rendered here in Python)."""

import random
import re
import time

import harness
from harness import read
from test_stream import reference

RENDERING = re.compile(r"rendering (\d+) of (\d+) maps: (.*)")

EXTRA = """
[map active_domains]
max_shrink = 0
output = {out}/active_domains
format = postfix
query = SELECT domain, 'active' FROM v_active_domains

[map quotas]
max_shrink = 0
output = {out}/quotas
format = passwd
query = SELECT email, quota FROM email_accounts WHERE quota > 2000
"""


class ChangedMapsOnly(harness.DaemonTestCase):
    ENV_ARGS = {"accounts": 400}

    def setUp(self):
        super().setUp()
        c = self.env.connect()
        c.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
        c.execute("CREATE VIEW v_active_domains AS SELECT domain FROM domains WHERE active = 1")
        c.close()

    def queries(self):
        text = read(self.env.conf)
        maps = {}
        for sec in re.split(r"(?m)^\[map ", text)[1:]:
            name = sec.split("]", 1)[0]
            fmt = re.search(r"(?m)^format = (\w+)", sec).group(1)
            q = re.search(r"(?ms)^query = (.*?)(?=^\w+ =|^\[|\Z)", sec).group(1)
            maps[name] = (fmt, "\n".join(line.strip() for line in q.splitlines()))
        return maps

    def change(self, rnd, c):
        """One random commit (some rounds more statements); returns what it was."""
        op = rnd.choices(["alias", "account", "domain", "notes", "checkpoint", "vacuum", "schema", "several"],
                         [6, 5, 2, 4, 3, 1, 1, 2])[0]
        n_acc = c.execute("SELECT max(id) FROM email_accounts").fetchone()[0]
        n_al = c.execute("SELECT max(id) FROM aliases").fetchone()[0]
        if op == "checkpoint":
            mode = rnd.choice(["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
            c.execute("PRAGMA wal_checkpoint(%s)" % mode)
            # A checkpoint alone is no change; the commit after it is.
            op = "checkpoint %s, then " % mode + rnd.choice(["alias", "notes"])
        if op == "vacuum":
            c.execute("DELETE FROM aliases WHERE id % 17 = ?", (rnd.randrange(17),))
            c.execute("VACUUM")
            return op
        if op == "schema":
            if rnd.randrange(2):
                exists = c.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'notes_body'").fetchone()[0]
                c.execute("DROP INDEX notes_body" if exists else "CREATE INDEX notes_body ON notes(body)")
            else:
                c.execute("ALTER TABLE notes ADD COLUMN c%d" % rnd.randrange(10 ** 9))
            return op
        statements = rnd.randint(2, 5) if op == "several" else 1
        c.execute("BEGIN")
        for _ in range(statements):
            what = op.split()[-1]
            if what == "several":
                what = rnd.choice(["alias", "account", "domain", "notes"])
            if what == "alias":
                k = rnd.randrange(4)
                if k == 0:
                    c.execute("UPDATE aliases SET destination = ? WHERE id = ?",
                              ("x%d@external.example" % rnd.randrange(10 ** 6), rnd.randint(1, n_al)))
                elif k == 1:
                    c.execute("INSERT INTO aliases(domain_id, source, destination) VALUES (1, ?, ?)",
                              ("n%d@d0001.example" % rnd.randrange(10 ** 6), "y@external.example"))
                elif k == 2:
                    c.execute("DELETE FROM aliases WHERE id = ?", (rnd.randint(1, n_al),))
                else:
                    c.execute("UPDATE aliases SET active = 1 - active WHERE id = ?", (rnd.randint(1, n_al),))
            elif what == "account":
                k = rnd.randrange(3)
                if k == 0:
                    c.execute("UPDATE email_accounts SET quota = ? WHERE id = ?",
                              (rnd.choice([0, 100, 3000, 5000]), rnd.randint(1, n_acc)))
                elif k == 1:
                    c.execute("UPDATE email_accounts SET active = 1 - active WHERE id = ?", (rnd.randint(1, n_acc),))
                else:
                    # A long text spills to an overflow page of its own.
                    c.execute("UPDATE email_accounts SET username = ? WHERE id = ?",
                              ("u" * rnd.choice([5, 3000, 9000]), rnd.randint(1, n_acc)))
            elif what == "domain":
                n_dom = c.execute("SELECT max(id) FROM domains").fetchone()[0]
                c.execute("UPDATE domains SET active = 1 - active WHERE id = ?", (rnd.randint(2, n_dom),))
            else:
                c.execute("INSERT INTO notes(body) VALUES (?)", ("n" * rnd.randint(1, 5000),))
        c.execute("COMMIT")
        return op

    def test_random_commits(self):
        # No shrink guard: a domain switched off may take most of a map.
        text = self.env.shipped_config(hooks=False, sync={"debounce_ms": 10, "max_delay_ms": 100},
                                       map_extra={m: "max_shrink = 0" for m in harness.MAPS})
        text += EXTRA.format(out=self.env.out)
        d = self.start(text)
        maps = self.queries()
        self.assertEqual(len(maps), 6)
        rnd = random.Random(1515)
        c = self.env.connect()
        partial = full = 0
        renderings = []
        try:
            for rnd_i in range(70):
                self.wait_cycles_done(d)
                n_sync = len(self.sync_lines(d))
                before = c.total_changes
                op = self.change(rnd, c)
                if c.total_changes == before:  # a row that was gone: no commit
                    c.execute("INSERT INTO notes(body) VALUES ('nothing else changed')")
                    op += ", then notes"
                harness.wait_for(lambda: len(self.sync_lines(d)) > n_sync, 20, what="a cycle after " + op)
                self.wait_cycles_done(d)
                # passwd replaced twice in one second waits for the next
                # (Dovecot compares whole seconds): that cycle too.
                while self.last_cycle_deferred(d):
                    n = len(self.sync_lines(d))
                    harness.wait_for(lambda: len(self.sync_lines(d)) > n, 20, what="the deferred cycle")
                    self.wait_cycles_done(d)
                for name, (fmt, query) in maps.items():
                    self.assertEqual(read(self.env.output(name), "rb"), reference(self.env.db, query, fmt),
                                     "round %d (%s): map %s differs from a full rendering; log:\n%s" % (
                                         rnd_i, op, name, "\n".join(d.log()[-12:])))
                for line in d.log():
                    m = RENDERING.search(line)
                    if m:
                        renderings.append(m.groups())
        finally:
            c.close()
        for n, total, why in renderings[1:]:
            if int(n) < int(total):
                partial += 1
            else:
                full += 1
        reasons = {re.sub(r"\d+", "N", re.sub(r" \(\d+ ms\)$", "", why)) for n, total, why in renderings}
        # Both happened: cycles that skipped maps, and full ones (schema
        # changes, WAL resets after checkpoints).
        self.assertGreater(partial, 20, reasons)
        self.assertGreater(full, 3, reasons)
        self.assertIn("every map (schema changed)", reasons)
        self.assertIn("every map (WAL reset since the last cycle)", reasons)
        # The written pages were traced to their tables by descent from the
        # roots, those of no table's b-tree (index, overflow, freelist
        # pages) by dbstat: both ways were taken.
        traced = re.compile(r"pages written \((\d+) traced to a table, (\d+) by dbstat\)")
        ways = [tuple(int(x) for x in m.groups()) for m in (traced.search(w) for n, t, w in renderings) if m]
        self.assertGreater(len([1 for t, s in ways if t > 0 and s == 0]), 10, ways)
        self.assertGreater(len([1 for t, s in ways if s > 0]), 0, ways)

    def last_cycle_deferred(self, d):
        log = d.log()
        starts = [i for i, line in enumerate(log) if RENDERING.search(line)]
        return any("in the next one" in line for line in log[starts[-1]:]) if starts else False

    def wait_cycles_done(self, d):
        """Until every cycle that started has ended (no debounce pending is
        not needed: the next change starts a new one)."""
        def done():
            log = d.log()
            started = sum(1 for line in log if RENDERING.search(line))
            ended = len(self.sync_lines(d))
            return started == ended
        harness.wait_for(done, 20, what="the running cycle to end")
        time.sleep(0.05)


if __name__ == "__main__":
    harness.main()
