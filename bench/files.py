#!/usr/bin/env python3
"""[files NAME] at scale: one cycle of a key file set (--once) with N
domains that each have a DKIM key (one key text shared by all, so that
generation is quick), measured three times each for: the first write (N
files written), a no-op cycle (nothing written), one key changed (one file
written), and one domain deactivated (one file removed). Wall time of the
whole --once run, median of the three.

    bench/files.py [N ...]     (default 1000 10000; MAPSYNCD=build/src/mapsyncd)
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gendb  # noqa: E402

EXE = os.environ.get("MAPSYNCD", os.path.join(ROOT, "build", "src", "mapsyncd"))


def once(conf):
    t = time.monotonic()
    r = subprocess.run([EXE, "-c", conf, "--once"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr)
    return time.monotonic() - t


def run(n):
    work = os.path.join(ROOT, "bench", "work", "files-%d" % n)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "keys"))
    db = os.path.join(work, "db.sqlite")
    gendb.generate(db, accounts=0, aliases=0, domains=n)
    priv, _ = gendb.dkim_keypair()
    c = gendb.connect(db)
    c.execute("UPDATE domains SET active = 1, dkim_selector = 'mail', dkim_private_key = ?", (priv,))
    c.close()
    conf = os.path.join(work, "mapsyncd.conf")
    with open(conf, "w") as f:
        f.write(f"""[database]
path = {db}
[sync]
state_dir = {work}/state
[files keys]
directory = {work}/keys
query = SELECT domain || '.' || dkim_selector || '.private', dkim_private_key FROM domains
  WHERE active = 1
content = pem-private-key
""")
    os.chmod(conf, 0o644)
    res = {}

    def phase(name, prepare):
        times = []
        for _ in range(3):
            prepare()
            times.append(once(conf))
        res[name] = statistics.median(times)

    def fresh():
        shutil.rmtree(os.path.join(work, "keys"))
        os.mkdir(os.path.join(work, "keys"))
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    phase("first write", fresh)
    phase("no-op", lambda: None)
    other, _ = gendb.dkim_keypair()
    keys = [priv, other]

    def change_one():
        keys.reverse()
        c = gendb.connect(db)
        c.execute("UPDATE domains SET dkim_private_key = ? WHERE id = 1", (keys[0],))
        c.close()
    phase("one key changed", change_one)
    k = [1]

    def remove_one():
        k[0] += 1
        c = gendb.connect(db)
        c.execute("UPDATE domains SET active = 0 WHERE id = ?", (k[0],))
        c.close()
    phase("one domain deactivated", remove_one)
    print("%d files: " % n + ", ".join("%s %.0f ms" % (name, t * 1000) for name, t in res.items()), flush=True)


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [1000, 10000]:
        run(n)
