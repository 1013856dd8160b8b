#!/usr/bin/env python3
"""Fault 1, crash: during a 20 s storm of random commits the daemon is
SIGKILLed at random moments 20 times and restarted at once. A reader in a
process of its own opens every map as fast as it can the whole time: every
version it ever reads must be a complete rendering (ends with a newline,
every line valid) equal to what the database held after some commit. After
the last restart the maps equal the database and every owed hook has run.

The script is also its own helper processes: --writer and --reader."""

import json
import os
import random
import subprocess
import sys
import time

import faultlib
from faultlib import MAPS, FORMAT, harness, read, wait_for

STORM_S = 20.0
KILLS = 20
HOSTS = 40  # domains


# --- the writer: random commits; after each, the expected maps' hashes -----

def writer_main(db, out_path, stop_path, seed):
    rng = random.Random(seed)
    c = harness.gendb.connect(db)
    hashes = list(harness.gendb.HASH_OF.values())
    n_domains = c.execute("SELECT count(*) FROM domains").fetchone()[0]
    fresh = [0]

    def ids(table):
        return [r[0] for r in c.execute("SELECT id FROM %s" % table)]

    def account_ids():
        return ids("email_accounts")

    def new_account():
        fresh[0] += 1
        dom = rng.randint(1, n_domains)
        local = "n%05d" % fresh[0]
        return ("INSERT INTO email_accounts (domain_id, email, username, password, quota, active) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (dom, "%s@d%04d.example" % (local, dom), local, rng.choice(hashes), rng.choice((0, 512, 1024))))

    def new_alias():
        dom = rng.randint(1, n_domains)
        return ("INSERT INTO aliases (domain_id, source, destination, active) VALUES (?, ?, ?, 1)",
                (dom, "s%04d@d%04d.example" % (rng.randint(1, 300), dom),
                 "t%04d@external.example" % rng.randint(1, 9999)))

    mutations = [
        lambda: ("UPDATE email_accounts SET quota = ? WHERE id = ?",
                 (rng.choice((0, 100, 512, 1024, 2048, 4096)), rng.choice(account_ids()))),
        lambda: ("UPDATE email_accounts SET active = 1 - active WHERE id = ?", (rng.choice(account_ids()),)),
        lambda: ("UPDATE email_accounts SET password = ? WHERE id = ?", (rng.choice(hashes), rng.choice(account_ids()))),
        new_account,
        lambda: ("DELETE FROM email_accounts WHERE id = ?", (rng.choice(account_ids()),)),
        lambda: ("UPDATE aliases SET active = 1 - active WHERE id = ?", (rng.choice(ids("aliases")),)),
        new_alias,
        lambda: ("UPDATE aliases SET destination = ? WHERE id = ?",
                 ("m%04d@external.example" % rng.randint(1, 9999), rng.choice(ids("aliases")))),
        lambda: ("DELETE FROM aliases WHERE id = ?", (rng.choice(ids("aliases")),)),
        lambda: ("UPDATE domains SET active = 1 - active WHERE id = ?", (rng.randint(4, n_domains),)),
    ]
    n = 0
    with open(out_path, "a") as out:
        while not os.path.exists(stop_path):
            stmts = [rng.choice(mutations)() for _ in range(rng.randint(1, 3))]
            c.execute("BEGIN IMMEDIATE")
            for sql, params in stmts:
                c.execute(sql, params)
            c.execute("COMMIT")
            n += 1
            want = harness.expected_maps(db)
            out.write(json.dumps({m: faultlib.sha256(want[m].encode()) for m in MAPS}) + "\n")
            out.flush()
            time.sleep(rng.uniform(0, 0.05))
    c.close()
    return 0


# --- the reader: every version of every map, as fast as it can --------------

def reader_main(out_dir, result_path, stop_path):
    seen = {m: {} for m in MAPS}
    bad = []
    missing = {m: 0 for m in MAPS}
    reads = 0
    paths = {m: os.path.join(out_dir, m) for m in MAPS}
    stop_check = 0
    while True:
        stop_check += 1
        if stop_check % 50 == 0 and os.path.exists(stop_path):
            break
        for m in MAPS:
            try:
                with open(paths[m], "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                missing[m] += 1
                continue
            reads += 1
            h = faultlib.sha256(data)
            if h not in seen[m]:
                seen[m][h] = 0
                problem = faultlib.line_problem(FORMAT[m], data)
                if problem and len(bad) < 10:
                    bad.append({"map": m, "sha256": h, "problem": problem, "head": data[:300].decode("latin-1"),
                                "tail": data[-300:].decode("latin-1")})
            seen[m][h] += 1
    with open(result_path, "w") as f:
        json.dump({"seen": seen, "bad": bad, "missing": missing, "reads": reads}, f)
    return 0


# --- the test ----------------------------------------------------------------

class Crash(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 200, "domains": HOSTS}

    def test_sigkill_storm(self):
        rng = random.Random(int(os.environ.get("FAULT_SEED", "5")))
        env = self.env
        env.write_config(sync=faultlib.FAST)
        initial = harness.expected_maps(env.db)
        d = self.daemon()
        d.wait_ready()
        self.wait_maps_match_db()

        expected_path = os.path.join(env.dir, "expected.jsonl")
        reader_result = os.path.join(env.dir, "reader.json")
        stop = os.path.join(env.dir, "stop")
        with open(expected_path, "w") as f:
            f.write(json.dumps({m: faultlib.sha256(initial[m].encode()) for m in MAPS}) + "\n")
        me = os.path.abspath(__file__)
        reader = subprocess.Popen([sys.executable, me, "--reader", env.out, reader_result, stop])
        writer = subprocess.Popen([sys.executable, me, "--writer", env.db, expected_path, stop, str(rng.random())])
        try:
            t0 = time.monotonic()
            kill_at = sorted(rng.uniform(0.3, STORM_S - 0.5) for _ in range(KILLS))
            kills = []
            for at in kill_at:
                delay = t0 + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.assertIsNone(writer.poll(), "the writer died")
                self.assertIsNone(d.proc.poll(), "mapsyncd exited by itself:\n" + self.dump(d))
                kills.append((round(time.monotonic() - t0, 2), len(d.log())))
                d.kill()
                d = self.daemon()
            time.sleep(max(0.0, t0 + STORM_S - time.monotonic()))
            open(stop, "w").close()
            self.assertEqual(writer.wait(30), 0, "the writer failed")
            d.wait_ready(timeout=30)
            # The last instance catches up with the last commit ...
            self.wait_maps_match_db(timeout=30)
            # ... and runs every hook still owed: the last run of each map's
            # hook saw the file as it is, and nothing is owed any more.
            state = os.path.join(env.state, "owed-hooks")

            def hooks_done():
                last = {}
                for m, sha, _rows in env.hooks_run():
                    last[m] = sha
                return not os.path.exists(state) and all(
                    last.get(m) == faultlib.sha256(read(env.output(m), "rb")) for m in MAPS)
            wait_for(hooks_done, 30, what="every owed hook to run; log:\n" + self.dump(d))
            self.assertIsNone(d.proc.poll())
            self.assertEqual(d.stop(), 0, self.dump(d))
        finally:
            open(stop, "w").close()
            for p in (writer, reader):
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.assertEqual(reader.returncode, 0, "the reader failed")

        # Every version read was complete and one the database held.
        res = json.loads(read(reader_result))
        self.assertEqual(res["bad"], [], "the reader saw incomplete or invalid maps")
        self.assertEqual(res["missing"], {m: 0 for m in MAPS}, "a map was missing at some moment")
        valid = {m: set() for m in MAPS}
        n_commits = 0
        for line in read(expected_path).splitlines():
            n_commits += 1
            for m, h in json.loads(line).items():
                valid[m].add(h)
        for m in MAPS:
            unknown = set(res["seen"][m]) - valid[m]
            self.assertEqual(unknown, set(), "%s: versions read that the database never held" % m)
        versions = {m: len(res["seen"][m]) for m in MAPS}
        left = faultlib.temp_files(env.out)
        print("storm: %d commits, %d kills at %s s; reader: %d reads, distinct versions %s; "
              "temporary files left by the kills: %d"
              % (n_commits - 1, len(kills), [k[0] for k in kills], res["reads"], versions, len(left)),
              file=sys.stderr)
        self.assertGreater(sum(versions.values()), 8, "the reader saw hardly any change")
        # The check every fault test ends with.
        self.assert_maps_equal(harness.expected_maps(env.db))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        sys.exit(writer_main(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])))
    if len(sys.argv) > 1 and sys.argv[1] == "--reader":
        sys.exit(reader_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    faultlib.main()
