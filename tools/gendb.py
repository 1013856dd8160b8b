#!/usr/bin/env python3
"""Generate admin-panel SQLite databases for mapsyncd's demo, tests and benchmarks.

The schema is tools/admin-panel.sql, executed as is. The content depends only
on the arguments: the same arguments give the same rows, byte for byte
(random.Random(seed), no clock, no global RNG).

Layout of a generated database
------------------------------
- domains: id k is named d%04d.example (d0001.example, d0002.example, ...).
  Domains 1 and 2 are always active, domain 3 is always inactive, every other
  domain is inactive with probability 1/10 (decided by the seed).
- email_accounts: id i is u%06d@<domain> (u000001@d0001.example), on domain
  ((i - 1) % domains) + 1, username = the local part, password hash
  TEST_HASHES[i % 4] (password TEST_PASSWORDS[i % 4]), quota (MiB) one of
  QUOTAS (0 means no limit), inactive with probability 1/20.
- aliases: --aliases counts ROWS, not sources. Sources are a%06d@<domain>
  (a000001@d0001.example), source j on domain ((j - 1) % domains) + 1, with
  1, 2 or 3 destination rows (a good share have 2 or 3). A destination is an
  account address (about 4 in 5, whether that account is active or not) or
  an external address x%06d.N@external.example. Rows are inactive with
  probability 1/20. No catch-all (@domain) sources, no row that mapsyncd
  would reject: without --hostile every row is a valid map entry, every key
  lower case.
- created_at/updated_at: "YYYY-MM-DD HH:MM:SS" strings drawn from the seed.

Fixed facts tests may rely on (any seed; they need --domains >= 3,
--accounts >= 3 and --aliases >= 5, which the defaults satisfy)
-----------------------------------------------------------------------
- ACTIVE_DOMAIN d0001.example (id 1) and ACTIVE_DOMAIN_2 d0002.example
  (id 2) are active; INACTIVE_DOMAIN d0003.example (id 3) is inactive.
- ACTIVE_ACCOUNT u000001@d0001.example is active on an active domain, with
  password TEST_PASSWORDS[1] = "test-pass-1" (hash TEST_HASHES[1], i.e.
  ACTIVE_ACCOUNT_HASH) and quota 1024 (ACTIVE_ACCOUNT_QUOTA).
- INACTIVE_ACCOUNT u000002@d0002.example is inactive (its domain is active).
- INACTIVE_DOMAIN_ACCOUNT u000003@d0003.example is active itself but on the
  inactive domain d0003.example.
- MULTI_ALIAS a000001@d0001.example has exactly three rows, all active, on
  the active domain d0001.example: MULTI_ALIAS_DESTINATIONS (sorted).
- INACTIVE_ALIAS a000002@d0002.example has one row, inactive, on the active
  domain d0002.example.
- INACTIVE_DOMAIN_ALIAS a000003@d0003.example has one active row on the
  inactive domain d0003.example.
Rows 4 and later (accounts) and sources 4 and later (aliases) are random.

Passwords
---------
The hashes are real Laravel-style bcrypt hashes ($2y$10$, 60 bytes),
computed once with crypt(3) and embedded below, so that generating a million
accounts costs no bcrypt time:
    TEST_PASSWORDS  = ("test-pass-0", "test-pass-1", "test-pass-2", "test-pass-3")
    ROTATE_PASSWORDS = ("rotate-one", "rotate-two")   (for password changes)
HASH_OF maps each of the six passwords to its hash.

--hostile
---------
Appends HOSTILE_ROWS (see there: table, values, why, and the expected result
per map of conf/mapsyncd.conf): newline, CR, tab, space, leading space and
'#' in keys, newline/CR/NUL in values, ':' in a passwd key, ':' and NUL in a
password, text in the quota column, empty key and value, an upper-case key,
a duplicate row, case-only duplicates, addresses on a foreign domain. All
are active and on the active domain d0001.example (domain_id 1).

--dkim N
--------
Gives domains 1..N (active or not) a DKIM key: dkim_selector DKIM_SELECTOR
("mail"), dkim_private_key a fresh RSA key in PEM (PKCS#8) made with
`openssl genpkey` at generation time (so these columns, unlike the rest,
differ from run to run; no key is ever committed), dkim_public_key the
base64 of its SubjectPublicKeyInfo (the p= of the DNS TXT record
"v=DKIM1; k=rsa; p=..."). dkim_keypair() makes one such pair.

Library use (tests put tools/ on sys.path and `import gendb`)
-------------------------------------------------------------
    gendb.generate(path, accounts=100, hostile=True)  -> dict of row counts
    gendb.connect(path)   -> sqlite3 connection, busy_timeout set, autocommit
Importing the module has no side effects.
"""

import argparse
import os
import random
import sqlite3
import sys
import time

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "admin-panel.sql")

# bcrypt ($2y$, cost 10) hashes of the test passwords; salts are fixed
# ("mapsyncdTestSalt...") so the table can be regenerated and checked with
# crypt.crypt(password, hash) == hash.
TEST_PASSWORDS = ("test-pass-0", "test-pass-1", "test-pass-2", "test-pass-3")
TEST_HASHES = (
    "$2y$10$mapsyncdTestSaltPass0.SCuqALkX5.9qQwjGQWAFniGGFASuRtG",
    "$2y$10$mapsyncdTestSaltPass1.n10Ic9zZC.o1o5JWLq25Vxg.wmrxV4K",
    "$2y$10$mapsyncdTestSaltPass2.LU4gYQ2h8xJOx2gWOGmDW9EJqcsntTG",
    "$2y$10$mapsyncdTestSaltPass3.7FDC3B0MgWL/OhM37gBTkZ5mp1bc.fO",
)
ROTATE_PASSWORDS = ("rotate-one", "rotate-two")
ROTATE_HASHES = (
    "$2y$10$mapsyncdTestSaltRotA1.a/CBFboH.h/QhYCSS.hCnVnOeAsm/8W",
    "$2y$10$mapsyncdTestSaltRotB2.c3zKwDESBmSUHDg/0v/fplEEcdve6nS",
)
HASH_OF = dict(zip(TEST_PASSWORDS + ROTATE_PASSWORDS, TEST_HASHES + ROTATE_HASHES))

QUOTAS = (0, 512, 1024, 2048)  # MiB; 0 = no limit

ACTIVE_DOMAIN = "d0001.example"
ACTIVE_DOMAIN_2 = "d0002.example"
INACTIVE_DOMAIN = "d0003.example"

ACTIVE_ACCOUNT = "u000001@d0001.example"
ACTIVE_ACCOUNT_PASSWORD = TEST_PASSWORDS[1]
ACTIVE_ACCOUNT_HASH = TEST_HASHES[1]
ACTIVE_ACCOUNT_QUOTA = 1024
INACTIVE_ACCOUNT = "u000002@d0002.example"
INACTIVE_DOMAIN_ACCOUNT = "u000003@d0003.example"

MULTI_ALIAS = "a000001@d0001.example"
MULTI_ALIAS_DESTINATIONS = (
    "forward1@external.example",
    "forward2@external.example",
    "u000001@d0001.example",
)
INACTIVE_ALIAS = "a000002@d0002.example"
INACTIVE_DOMAIN_ALIAS = "a000003@d0003.example"

VICTIM = "victim@d0001.example"

DKIM_SELECTOR = "mail"


def dkim_keypair(bits=1024):
    """(private key PEM text, public key base64) of a new RSA key, from
    `openssl genpkey` (package openssl)."""
    import base64
    import subprocess
    priv = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % bits],
                          check=True, capture_output=True, text=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=priv.encode(),
                         check=True, capture_output=True).stdout
    return priv, base64.b64encode(der).decode()

# Hostile rows, all active and on domain_id 1 (d0001.example). "values" holds
# the columns that matter (str binds as TEXT, bytes as BLOB); the others get
# defaults (see _hostile_tuple). "expect" tells, per map of
# conf/mapsyncd.conf, what mapsyncd must do with the row:
#   "invalid": the row is dropped with a warning (on_invalid = skip) or the
#              map fails (on_invalid = fail); it never reaches the file;
#   "valid":   the row is rendered under "key" (lower-cased).
# Maps not named do not read the row's table.
HOSTILE_ROWS = (
    # --- aliases (map virtual_aliases) ---
    {"table": "aliases",
     "values": {"source": "x@d0001.example\nevil@d0001.example", "destination": VICTIM},
     "why": "LF in a key: would inject the line 'evil@d0001.example<TAB>victim...'",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "inject-value@d0001.example",
                "destination": "victim@x\nroot@d0001.example evil"},
     "why": "LF in a value: would inject the line 'root@d0001.example evil'",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "cr\rkey@d0001.example", "destination": VICTIM},
     "why": "CR in a key",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "cr-value@d0001.example",
                "destination": "victim@d0001.example\rroot@d0001.example"},
     "why": "CR in a value",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "tab\tkey@d0001.example", "destination": VICTIM},
     "why": "TAB inside a key: Postfix would end the key at the TAB",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "space key@d0001.example", "destination": VICTIM},
     "why": "space inside a key: Postfix would end the key at the space",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": " leading-space@d0001.example", "destination": VICTIM},
     "why": "leading space: a line starting with white space continues the previous line",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "#hash@d0001.example", "destination": VICTIM},
     "why": "key starting with '#': the line would be a comment in a Postfix table",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "nul-value@d0001.example",
                "destination": b"victim@d0001.example\x00root@d0001.example"},
     "why": "NUL inside a BLOB value: strlen()-based C code would silently truncate it",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": b"nul\x00key@d0001.example", "destination": VICTIM},
     "why": "NUL inside a BLOB key",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "empty-dest@d0001.example", "destination": ""},
     "why": "empty value (the schema allows '' where it forbids NULL)",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "", "destination": VICTIM},
     "why": "empty key",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "postmaster@foreign.example", "destination": VICTIM},
     "why": "source outside its own domain: it would rewrite mail for a foreign "
            "address; the conf query turns its value into NULL",
     "expect": {"virtual_aliases": "invalid"}},
    {"table": "aliases",
     "values": {"source": "Mixed.Case@D0001.example", "destination": "Victim@D0001.example"},
     "why": "valid: an upper-case key is lower-cased (the value is kept as is)",
     "expect": {"virtual_aliases": "valid"}, "key": "mixed.case@d0001.example"},
    {"table": "aliases",
     "values": {"source": "dup-row@d0001.example", "destination": VICTIM},
     "why": "valid: duplicate row (same source and destination twice), first copy",
     "expect": {"virtual_aliases": "valid"}, "key": "dup-row@d0001.example"},
    {"table": "aliases",
     "values": {"source": "dup-row@d0001.example", "destination": VICTIM},
     "why": "valid: duplicate row, second copy; the line names victim once",
     "expect": {"virtual_aliases": "valid"}, "key": "dup-row@d0001.example"},
    {"table": "aliases",
     "values": {"source": "Case-Dup@d0001.example", "destination": "one@external.example"},
     "why": "valid: sources differing only in case are one key after lower-casing "
            "(one line, both destinations)",
     "expect": {"virtual_aliases": "valid"}, "key": "case-dup@d0001.example"},
    {"table": "aliases",
     "values": {"source": "case-dup@d0001.example", "destination": "two@external.example"},
     "why": "valid: the lower-case twin of Case-Dup@d0001.example",
     "expect": {"virtual_aliases": "valid"}, "key": "case-dup@d0001.example"},
    # --- email_accounts (maps vmailbox and passwd) ---
    {"table": "email_accounts",
     "values": {"email": "Dup@d0001.example", "username": "Dup", "password": TEST_HASHES[0]},
     "why": "emails differing only in case (the unique index is case-sensitive): one key "
            "after lower-casing; vmailbox gets one identical value, passwd keeps the "
            "first row by value order, i.e. this one (TEST_HASHES[0] sorts first), and warns",
     "expect": {"vmailbox": "valid", "passwd": "valid"}, "key": "dup@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "dup@d0001.example", "username": "dup", "password": TEST_HASHES[1]},
     "why": "the lower-case twin of Dup@d0001.example; dropped from passwd as a repeated key",
     "expect": {"vmailbox": "valid", "passwd": "valid"}, "key": "dup@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "Mixed.Case@D0001.example", "username": "Mixed.Case",
                "password": TEST_HASHES[3], "quota": 2048},
     "why": "valid: upper-case email; key and mailbox path are lower-cased",
     "expect": {"vmailbox": "valid", "passwd": "valid"}, "key": "mixed.case@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "colon:user@d0001.example", "username": "colon:user"},
     "why": "':' in a passwd-file key shifts every field; harmless in a Postfix key",
     "expect": {"vmailbox": "valid", "passwd": "invalid"}, "key": "colon:user@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "lf@d0001.example\nroot@d0001.example", "username": "lf"},
     "why": "LF in an email: would inject a login 'root@d0001.example' with this password",
     "expect": {"vmailbox": "invalid", "passwd": "invalid"}},
    {"table": "email_accounts",
     "values": {"email": "space user@d0001.example", "username": "space user"},
     "why": "space inside an email",
     "expect": {"vmailbox": "invalid", "passwd": "invalid"}},
    {"table": "email_accounts",
     "values": {"email": "#hash-user@d0001.example", "username": "#hash-user"},
     "why": "email starting with '#': a comment in a Postfix table, and Dovecot's "
            "passwd-file also skips lines starting with '#' (db-passwd-file.c)",
     "expect": {"vmailbox": "invalid", "passwd": "invalid"}},
    {"table": "email_accounts",
     "values": {"email": "foreign@elsewhere.example", "username": "foreign"},
     "why": "email outside its own domain: no mailbox path can be derived (vmailbox "
            "value NULL); a login name is still a login name (passwd valid)",
     "expect": {"vmailbox": "invalid", "passwd": "valid"}, "key": "foreign@elsewhere.example"},
    {"table": "email_accounts",
     "values": {"email": "pw-colon@d0001.example", "username": "pw-colon",
                "password": "x:1000:1000::/root::nopassword=y"},
     "why": "':' in the password would set uid, gid, home and extra fields such as "
            "nopassword=y; the conf query accepts only 60-byte bcrypt text without ':'",
     "expect": {"vmailbox": "valid", "passwd": "invalid"}, "key": "pw-colon@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "pw-empty@d0001.example", "username": "pw-empty", "password": ""},
     "why": "empty password",
     "expect": {"vmailbox": "valid", "passwd": "invalid"}, "key": "pw-empty@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "pw-nul-text@d0001.example", "username": "pw-nul-text",
                "password": TEST_HASHES[0] + "\x00::::::nopassword=y"},
     "why": "NUL inside TEXT after a valid hash: SQL length() and GLOB stop at the NUL, "
            "'||' does not; the conf query measures length(CAST(password AS BLOB))",
     "expect": {"vmailbox": "valid", "passwd": "invalid"}, "key": "pw-nul-text@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "pw-nul-blob@d0001.example", "username": "pw-nul-blob",
                "password": TEST_HASHES[2][:40].encode() + b"\x00" + TEST_HASHES[2][41:].encode()},
     "why": "NUL inside a 60-byte BLOB password",
     "expect": {"vmailbox": "valid", "passwd": "invalid"}, "key": "pw-nul-blob@d0001.example"},
    {"table": "email_accounts",
     "values": {"email": "quota-text@d0001.example", "username": "quota-text",
                "quota": "1 nopassword=y"},
     "why": "text in the integer quota column (SQLite keeps it as TEXT): would add the "
            "passdb extra field nopassword (login without password)",
     "expect": {"vmailbox": "valid", "passwd": "invalid"}, "key": "quota-text@d0001.example"},
)

_EPOCH = 1672531200  # 2023-01-01 00:00:00 UTC


def connect(path, busy_timeout_ms=5000):
    """Open PATH with busy_timeout set, in autocommit mode (isolation_level
    None: issue BEGIN/COMMIT yourself to group writes)."""
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = %d" % int(busy_timeout_ms))
    return conn


def _siblings(path):
    return [path, path + "-wal", path + "-shm", path + "-journal"]


def _timestamps(rng, n=4096):
    start = _EPOCH + rng.randrange(0, 365 * 86400)
    ts = sorted(start + rng.randrange(0, 2 * 365 * 86400) for _ in range(n))
    return [time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) for t in ts]


def _domain_rows(rng, n_domains, ts):
    n_ts = len(ts)
    for k in range(1, n_domains + 1):
        r = rng.random()
        if k <= 2:
            active = 1
        elif k == 3:
            active = 0
        else:
            active = 0 if r < 0.1 else 1
        t = int(rng.random() * n_ts)
        yield (k, "d%04d.example" % k, active, "Mail domain %d" % k,
               "mail" if k % 3 else None, None, None, ts[t], ts[t])


def _account_rows(rng, n_accounts, n_domains, ts):
    n_ts = len(ts)
    random_ = rng.random
    for i in range(1, n_accounts + 1):
        local = "u%06d" % i
        dom = (i - 1) % n_domains + 1
        r_active, r_quota, r_ts, r_upd = random_(), random_(), random_(), random_()
        if i == 1:
            active, quota = 1, ACTIVE_ACCOUNT_QUOTA
        elif i == 2:
            active, quota = 0, QUOTAS[int(r_quota * 4)]
        elif i == 3:
            active, quota = 1, QUOTAS[int(r_quota * 4)]
        else:
            active, quota = (0 if r_active < 0.05 else 1), QUOTAS[int(r_quota * 4)]
        c = int(r_ts * n_ts)
        u = c + int(r_upd * (n_ts - c))
        yield (i, dom, "%s@d%04d.example" % (local, dom), local, TEST_HASHES[i % 4],
               quota, active, ts[c], ts[u])


def _alias_rows(rng, n_rows, n_accounts, n_domains, ts):
    n_ts = len(ts)
    random_ = rng.random
    row_id = 0
    j = 0
    while row_id < n_rows:
        j += 1
        source_local = "a%06d" % j
        dom = (j - 1) % n_domains + 1
        source = "%s@d%04d.example" % (source_local, dom)
        r_k, r_base = random_(), random_()
        if j == 1:
            dests = [(d, 1) for d in MULTI_ALIAS_DESTINATIONS]
        elif j == 2:
            dests = [("u000001@d0001.example", 0)]
        elif j == 3:
            dests = [("u000001@d0001.example", 1)]
        else:
            k = 1 if r_k < 0.55 else (2 if r_k < 0.85 else 3)
            base = int(r_base * n_accounts) if n_accounts else 0
            dests = []
            seen = set()
            for r in range(k):
                r_ext, r_act = random_(), random_()
                if n_accounts and r_ext >= 0.2:
                    a = (base + r) % n_accounts + 1
                    dest = "u%06d@d%04d.example" % (a, (a - 1) % n_domains + 1)
                else:
                    dest = "x%06d.%d@external.example" % (j, r)
                if dest in seen:
                    continue
                seen.add(dest)
                dests.append((dest, 0 if r_act < 0.05 else 1))
        c = int(random_() * n_ts)
        for dest, active in dests:
            if row_id >= n_rows:
                break
            row_id += 1
            yield (row_id, dom, source, dest, active, ts[c], ts[c])


def _hostile_tuple(row, row_id, created):
    v = row["values"]
    if row["table"] == "aliases":
        return (row_id, 1, v["source"], v["destination"], 1, created, created)
    return (row_id, 1, v["email"], v["username"], v.get("password", TEST_HASHES[0]),
            v.get("quota", 1024), 1, created, created)


_INSERT = {
    "domains": "INSERT INTO domains (id, domain, active, description, dkim_selector, "
               "dkim_private_key, dkim_public_key, created_at, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "email_accounts": "INSERT INTO email_accounts (id, domain_id, email, username, password, "
                      "quota, active, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "aliases": "INSERT INTO aliases (id, domain_id, source, destination, active, created_at, "
               "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
}


def generate(path, accounts=100, aliases=None, domains=None, seed=1, journal="wal",
             hostile=False, force=False, dkim=0):
    """Create the database PATH; see the module docstring. aliases defaults
    to accounts, domains to max(3, accounts // 100). Raises FileExistsError
    when PATH (or one of its -wal, -shm, -journal files) exists and force is
    false. Returns the number of rows written per table."""
    if aliases is None:
        aliases = accounts
    if domains is None:
        domains = max(3, accounts // 100)
    if accounts < 0 or aliases < 0 or domains < 1:
        raise ValueError("accounts and aliases must be >= 0, domains >= 1")
    if journal not in ("wal", "delete"):
        raise ValueError("journal must be 'wal' or 'delete'")
    existing = [p for p in _siblings(path) if os.path.lexists(p)]
    if existing:
        if not force:
            raise FileExistsError("%s exists (use --force to replace it)" % existing[0])
        for p in existing:
            os.unlink(p)
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        schema = f.read()

    rng = random.Random(seed)
    ts = _timestamps(rng)
    counts = {}
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        conn.executescript(schema)
        conn.execute("BEGIN")
        conn.executemany(_INSERT["domains"], _domain_rows(rng, domains, ts))
        conn.executemany(_INSERT["email_accounts"], _account_rows(rng, accounts, domains, ts))
        conn.executemany(_INSERT["aliases"], _alias_rows(rng, aliases, accounts, domains, ts))
        counts = {"domains": domains, "email_accounts": accounts, "aliases": aliases}
        for k in range(1, min(dkim, domains) + 1):
            priv, pub = dkim_keypair()
            conn.execute("UPDATE domains SET dkim_selector = ?, dkim_private_key = ?, dkim_public_key = ?"
                         " WHERE id = ?", (DKIM_SELECTOR, priv, pub, k))
        if hostile:
            for table in ("email_accounts", "aliases"):
                next_id = conn.execute("SELECT coalesce(max(id), 0) FROM %s" % table).fetchone()[0]
                rows = [_hostile_tuple(r, next_id + n + 1, ts[0])
                        for n, r in enumerate(x for x in HOSTILE_ROWS if x["table"] == table)]
                conn.executemany(_INSERT[table], rows)
                counts[table] += len(rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = %s" % journal.upper())
        conn.close()
    except BaseException:
        conn.close()
        for p in _siblings(path):
            if os.path.lexists(p):
                os.unlink(p)
        raise
    return counts


def _build_parser():
    pw_lines = "\n".join("  %-12s %s" % (p, h) for p, h in HASH_OF.items())
    epilog = (
        "Passwords (bcrypt $2y$10$ hashes embedded in the script):\n"
        + pw_lines + "\n"
        "Account i gets TEST_PASSWORDS[i %% 4]; rotate-one and rotate-two are for\n"
        "tests that change a password.\n\n"
        "Fixed facts (domains >= 3, accounts >= 3, aliases >= 5):\n"
        "  %s: active, password %s, quota %d MiB, on active %s\n"
        "  %s: inactive account;  %s: account on inactive %s\n"
        "  %s: three active rows;  %s: inactive alias;\n"
        "  %s: alias on the inactive domain.\n"
        "--hostile appends gendb.HOSTILE_ROWS (injection attempts etc.) on %s.\n"
        "Exit status: 0 done, 1 PATH exists (without --force) or error, 2 usage."
        % (ACTIVE_ACCOUNT, ACTIVE_ACCOUNT_PASSWORD, ACTIVE_ACCOUNT_QUOTA, ACTIVE_DOMAIN,
           INACTIVE_ACCOUNT, INACTIVE_DOMAIN_ACCOUNT, INACTIVE_DOMAIN,
           MULTI_ALIAS, INACTIVE_ALIAS, INACTIVE_DOMAIN_ALIAS, ACTIVE_DOMAIN))
    p = argparse.ArgumentParser(
        prog="gendb.py",
        description="Generate an admin-panel SQLite database (schema tools/admin-panel.sql) "
                    "with deterministic content.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)

    def count(s):
        n = int(s)
        if n < 0:
            raise argparse.ArgumentTypeError("must be >= 0")
        return n

    def positive(s):
        n = int(s)
        if n < 1:
            raise argparse.ArgumentTypeError("must be >= 1")
        return n

    p.add_argument("--accounts", type=count, default=100, metavar="N",
                   help="email_accounts rows (default 100)")
    p.add_argument("--aliases", type=count, default=None, metavar="N",
                   help="aliases rows, not sources (default: as many as accounts)")
    p.add_argument("--domains", type=positive, default=None, metavar="N",
                   help="domains (default: max(3, accounts // 100))")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    p.add_argument("--journal", choices=("wal", "delete"), default="wal",
                   help="journal mode the database is left in (default wal)")
    p.add_argument("--hostile", action="store_true",
                   help="also insert gendb.HOSTILE_ROWS")
    p.add_argument("--dkim", type=count, default=0, metavar="N",
                   help="give domains 1..N a fresh DKIM key (openssl genpkey; see --help)")
    p.add_argument("--force", action="store_true",
                   help="replace PATH (and its -wal, -shm, -journal files)")
    p.add_argument("path", metavar="PATH")
    return p


def main(argv=None):
    args = _build_parser().parse_args(argv)
    try:
        counts = generate(args.path, accounts=args.accounts, aliases=args.aliases,
                          domains=args.domains, seed=args.seed, journal=args.journal,
                          hostile=args.hostile, force=args.force, dkim=args.dkim)
    except (OSError, sqlite3.Error, ValueError) as e:
        print("gendb.py: %s" % e, file=sys.stderr)
        return 1
    print("%s: %d domains, %d accounts, %d aliases" % (
        args.path, counts["domains"], counts["email_accounts"], counts["aliases"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
