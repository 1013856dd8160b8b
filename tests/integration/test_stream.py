#!/usr/bin/env python3
"""Streamed maps (rows in index order, no SQLite sort) are byte for byte the
maps of the sorting query: mapsyncd --once on a database that random
commits fill with hostile keys and values (mixed case, bytes >= 0x80,
blobs, integers, reals equal to integers, repeated keys, equal keys with
other values), compared after every run with a rendering of the sorting
query (ORDER BY lower(k), v) done here in Python."""

import os
import random
import re

import harness
from harness import read

# Extra maps whose rows stress the order: values that are numbers (1 and
# 1.0 are equal to SQLite), keys lower-cased by the query, keys that are
# not text.
EXTRA_MAPS = {
    "alias_ids": ("postfix", "SELECT source, CASE WHEN id % 3 = 0 THEN id ELSE id * 1.0 END FROM aliases"),
    "lowered": ("postfix", "SELECT lower(source), destination FROM aliases WHERE active = 1"),
    "by_domain": ("passwd", "SELECT d.domain, a.email FROM domains AS d JOIN email_accounts AS a "
                            "ON a.domain_id = d.id"),
    "raw_accounts": ("passwd", "SELECT email, password FROM email_accounts;"),
}


def reference(db, query, fmt):
    """The map as render.c renders the rows of db_query_new()'s sorting
    query: SQLite sorts, Python renders."""
    body = query.rstrip(" \t\r\n;")
    sql = ("WITH mapsyncd_q(k, v) AS (\n%s\n)\nSELECT CAST(k AS BLOB), CAST(v AS BLOB) FROM mapsyncd_q "
           "ORDER BY lower(k) COLLATE BINARY, v COLLATE BINARY" % body)
    c = harness.gendb.connect(db)
    try:
        rows = c.execute(sql).fetchall()
    finally:
        c.close()
    out, key, last = [], None, None
    for k, v in rows:
        if k is None or v is None or not k or not v:
            continue
        k, v = bytes(k), bytes(v)
        if any(b <= 0x20 or b == 0x7f for b in k) or k[:1] == b"#" or (fmt == "passwd" and b":" in k):
            continue
        if any(b < 0x20 or b == 0x7f for b in v):
            continue
        lk = bytes(b + 32 if 65 <= b <= 90 else b for b in k)
        if lk == key:
            if v == last or fmt == "passwd":
                continue
            out.append(b", " + v)
        else:
            if key is not None:
                out.append(b"\n")
            out.append(lk + (b"\t" if fmt == "postfix" else b":") + v)
            key = lk
        last = v
    if key is not None:
        out.append(b"\n")
    return b"".join(out)


HOSTILE_TEXT = ["A", "B", "Z", "a", "b", "z", "\u00e9", "\u00c9", "\u00df", "0", "9", "-", ".", "_", "~", "@"]


def hostile_address(rnd):
    local = "".join(rnd.choice(HOSTILE_TEXT) for _ in range(rnd.randint(1, 4)))
    return local + "@d0001.example"


def hostile_value(rnd):
    kind = rnd.randrange(8)
    if kind == 0:
        return rnd.choice([1, 9, 10, -1, 2 ** 62])
    if kind == 1:
        return rnd.choice([1.0, 1.5, 9.0, 10.0])
    if kind == 2:
        return hostile_address(rnd).encode()  # a blob
    if kind == 3:
        return rnd.choice(["1", "10", "9", "x@y", "X@Y"])
    return hostile_address(rnd)


class StreamEqualsSorted(harness.TestCase):
    ENV_ARGS = {"accounts": 300}

    def config(self):
        text = self.env.shipped_config(hooks=False)
        for name, (fmt, query) in EXTRA_MAPS.items():
            text += "\n[map %s]\noutput = %s\nformat = %s\nquery = %s\n" % (
                name, self.env.output(name), fmt, query)
        return text

    def queries(self):
        """Every map's query and format, from the config as written."""
        text = read(self.env.conf)
        maps = {}
        for sec in re.split(r"(?m)^\[map ", text)[1:]:
            name = sec.split("]", 1)[0]
            fmt = re.search(r"(?m)^format = (\w+)", sec).group(1)
            q = re.search(r"(?ms)^query = (.*?)(?=^\w+ =|\Z)", sec).group(1)
            q = "\n".join(line.strip() for line in q.splitlines())
            maps[name] = (fmt, q)
        return maps

    def mutate(self, rnd, c):
        for _ in range(rnd.randint(1, 12)):
            op = rnd.randrange(10)
            if op == 0:
                c.execute("INSERT OR IGNORE INTO email_accounts(domain_id, email, username, password, quota) "
                          "VALUES (1, ?, 'x', ?, 0)", (hostile_address(rnd) + str(rnd.random()),
                                                       hostile_value(rnd)))
            elif op == 1:
                c.execute("UPDATE OR IGNORE email_accounts SET email = upper(email) WHERE id = ?",
                          (rnd.randint(1, 300),))
            elif op == 2:
                c.execute("UPDATE OR IGNORE email_accounts SET email = ? WHERE id = ?",
                          (rnd.choice([hostile_value(rnd), hostile_address(rnd) + str(rnd.random())]),
                           rnd.randint(1, 300)))
            elif op == 3:
                src = rnd.choice([hostile_address(rnd), "a000001@d0001.example", "A000001@D0001.example"])
                for _ in range(rnd.randint(1, 4)):
                    c.execute("INSERT INTO aliases(domain_id, source, destination) VALUES (1, ?, ?)",
                              (src, hostile_value(rnd)))
            elif op == 4:
                c.execute("UPDATE aliases SET destination = ? WHERE id = ?",
                          (hostile_value(rnd), rnd.randint(1, 300)))
            elif op == 5:
                c.execute("DELETE FROM aliases WHERE id = ?", (rnd.randint(1, 400),))
            elif op == 6:
                # The same pair twice, and the same key with another value.
                c.execute("INSERT INTO aliases(domain_id, source, destination) "
                          "SELECT domain_id, source, destination FROM aliases WHERE id = ?",
                          (rnd.randint(1, 300),))
            elif op == 7:
                c.execute("UPDATE OR IGNORE domains SET domain = upper(domain) WHERE id = ?", (rnd.randint(1, 3),))
            elif op == 8:
                c.execute("UPDATE aliases SET source = ? || source WHERE id = ?",
                          (rnd.choice(["", "A", "\u00e9", "z"]), rnd.randint(1, 300)))
            # op 9: nothing

    def test_random_commits(self):
        self.env.write_config(self.config())
        maps = self.queries()
        self.assertEqual(len(maps), 4 + len(EXTRA_MAPS))
        rnd = random.Random(15)
        sorted_maps = set()
        streamed_runs = 0
        for rnd_i in range(40):
            r = self.env.run("--once", "-v")
            self.assertEqual(r.returncode, 0, r.stderr)
            fell_back = set(re.findall(r"(\w+): row \d+ is out of the canonical order", r.stderr))
            sorted_maps |= fell_back
            streamed_runs += len(maps) - len(fell_back)
            for name, (fmt, query) in maps.items():
                self.assertEqual(read(self.env.output(name), "rb"), reference(self.env.db, query, fmt),
                                 "round %d: map %s differs from the sorted rendering (%s)" % (
                                     rnd_i, name, "sorted" if name in fell_back else "streamed"))
            c = self.env.connect()
            try:
                c.execute("BEGIN")
                self.mutate(rnd, c)
                c.execute("COMMIT")
            finally:
                c.close()
        # Both ways were taken: many renderings streamed, and hostile rows
        # sent several maps back to the sort.
        self.assertGreater(streamed_runs, 40 * len(maps) // 4)
        self.assertGreaterEqual(len(sorted_maps), 3, sorted_maps)

    def test_clean_database_streams_every_map(self):
        self.env.write_config()
        r = self.env.run("--once", "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotRegex(r.stderr, "out of the canonical order")
        self.assert_maps_match_db()


if __name__ == "__main__":
    harness.main()
