#!/usr/bin/env python3
"""Proof for OpenDKIM: mapsyncd runs as a daemon on the shipped config with
its OpenDKIM sections enabled (the ';' lines; paths moved into a temporary
folder), writing the key files (0600, owner opendkim), KeyTable and
SigningTable from the domains table. A private OpenDKIM (package opendkim,
as user opendkim, RequireSafeKeys on) is the milter of a private Postfix
instance on a loopback port. A message from an active domain with a key is
signed, and the signature verifies (python3-dkim) against the domain's
dkim_public_key, served by a DNS function that answers from the database;
a domain without a key is not signed; after the domain's key changes in
the database, new mail verifies with the new key and not with the old; a
domain that gets a key in the panel is signed after mapsyncd's reload."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2elib as E  # noqa: E402


def opendkim_conf_source(tmp, odk):
    """The shipped config with the ';' lines enabled, /etc/opendkim moved to
    odk and the reload signalling the private OpenDKIM."""
    with open(E.SHIPPED_CONF) as f:
        text = f.read()
    text = re.sub(r"(?m)^;", "", text)
    text = text.replace("/etc/opendkim/", odk + "/")
    E.check("command = systemctl reload opendkim" in text, "the shipped [reload opendkim] is not systemctl reload")
    text = text.replace("command = systemctl reload opendkim",
                        "command = kill -USR1 $(cat %s/opendkim-run/opendkim.pid) && echo reloaded >> %s/reloads"
                        % (tmp, tmp))
    path = os.path.join(tmp, "shipped-opendkim.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


class OpenDKIM:
    """opendkim -f on 127.0.0.1:port as user opendkim."""

    def __init__(self, tmp, odk, key_table, signing_table):
        self.dir = odk
        self.run_dir = os.path.join(tmp, "opendkim-run")
        os.makedirs(self.run_dir, exist_ok=True)
        u = pwd.getpwnam("opendkim")
        os.chown(self.run_dir, u.pw_uid, u.pw_gid)
        self.port = E.free_port()
        self.conf = os.path.join(self.dir, "opendkim.conf")
        self.pid_file = os.path.join(self.run_dir, "opendkim.pid")
        self.log_path = os.path.join(self.dir, "opendkim.log")
        with open(self.conf, "w") as f:
            f.write(f"""\
Syslog no
Mode s
Canonicalization relaxed/simple
KeyTable file:{key_table}
SigningTable refile:{signing_table}
Socket inet:{self.port}@127.0.0.1
PidFile {self.pid_file}
UserID opendkim
InternalHosts 127.0.0.1
RequireSafeKeys yes
""")
        self.proc = None

    def start(self):
        check = subprocess.run(["opendkim", "-n", "-x", self.conf], capture_output=True, text=True, timeout=30)
        E.check(check.returncode == 0, f"opendkim -n rejects {self.conf}: {check.stderr}{check.stdout}")
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["opendkim", "-f", "-x", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf)
        up, waited = E.wait_for(self._listening, 30, 0.1)
        E.check(up, f"opendkim does not listen on 127.0.0.1:{self.port} after {waited:.1f} s:\n{self.log()}")
        E.log(f"opendkim started: {self.conf}, milter 127.0.0.1:{self.port}, pid {self.proc.pid}")

    def _listening(self):
        import socket
        if self.proc.poll() is not None:
            E.fail(f"opendkim exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return os.path.exists(self.pid_file)
        except OSError:
            return False

    def log(self):
        return E.read_text(self.log_path)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self.logf.close()


def import_dkim():
    """python3-dkim (Debian's package), also when this Python is not
    Debian's /usr/bin/python3 (a pyenv one, say)."""
    try:
        import dkim
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import dkim
        except ImportError:
            E.fail("python3-dkim is not installed: run tools/install-deps test as root")
    return dkim


def test(checks, tmp):
    dkim = import_dkim()
    gendb = E.import_gendb()
    db_path = os.path.join(tmp, "db", "database.sqlite")
    E.generate_db(db_path, accounts=30, hostile=False)
    db = E.connect(db_path)
    keys = {}
    # d0001: active with a key; d0002: active, no key; d0003: inactive, key.
    for did in (1, 3):
        priv, pub = gendb.dkim_keypair()
        keys[did] = (priv, pub)
        db.execute("UPDATE domains SET dkim_selector = 'mail', dkim_private_key = ?, dkim_public_key = ?"
                   " WHERE id = ?", (priv, pub, did))
    db.execute("UPDATE domains SET dkim_selector = NULL, dkim_private_key = NULL, dkim_public_key = NULL"
               " WHERE id = 2")
    # OpenDKIM's RequireSafeKeys refuses a key below a directory anyone may
    # write (/tmp): the keys live in a private directory below /run.
    odk = tempfile.mkdtemp(prefix="mapsyncd-e2e-dkim-", dir="/run" if os.path.isdir("/run") else None)
    try:
        run_test(checks, tmp, dkim, gendb, db_path, db, keys, odk)
    finally:
        shutil.rmtree(odk, ignore_errors=True)


def run_test(checks, tmp, dkim, gendb, db_path, db, keys, odk):
    key_dir = os.path.join(odk, "keys")
    os.makedirs(key_dir)
    os.chmod(odk, 0o755)
    conf = E.Conf(tmp, db_path, src=opendkim_conf_source(tmp, odk))
    out = {m: conf.output(conf.postfix_map(m)) for m in E.POSTFIX_MAPS}
    key_table, signing_table = conf.output("opendkim_keytable"), conf.output("opendkim_signingtable")
    reloads = os.path.join(tmp, "reloads")

    def dns_from_db(name, timeout=5):
        """TXT of <selector>._domainkey.<domain> from the database."""
        n = name.decode().rstrip(".").lower()
        sel, _, dom = n.partition("._domainkey.")
        row = db.execute("SELECT dkim_public_key FROM domains WHERE lower(domain) = ? AND dkim_selector = ?",
                         (dom, sel)).fetchone()
        if not row or not row[0]:
            return None
        return ("v=DKIM1; k=rsa; p=" + row[0]).encode()

    with E.SystemPostfixConfig() as sysconf:
        daemon = E.Daemon(conf)
        od = pf = None
        try:
            # The daemon's first cycle writes everything, then tries a
            # reload of an OpenDKIM not yet running: that hook fails and is
            # retried, which is fine.
            daemon.start()
            key1 = os.path.join(key_dir, "d0001.example.mail.private")

            def key_files():
                E.check(sorted(os.listdir(key_dir)) == ["d0001.example.mail.private"],
                        f"key files: {sorted(os.listdir(key_dir))}")
                st = os.stat(key1)
                E.check(st.st_mode & 0o7777 == 0o600, f"mode {st.st_mode & 0o7777:o}")
                E.check(st.st_uid == pwd.getpwnam("opendkim").pw_uid, f"owner uid {st.st_uid}")
                E.check(E.read_text(key1) == keys[1][0], "the key file is not the database's key")
            checks.run("one key file per active domain with a key, 0600, owner opendkim", key_files)

            od = OpenDKIM(tmp, odk, key_table, signing_table)
            od.start()
            pf = E.Postfix(tmp, sysconf, out, extra_main={
                "smtpd_milters": f"inet:127.0.0.1:{od.port}",
                "non_smtpd_milters": "$smtpd_milters",
                "milter_default_action": "tempfail",
                "milter_protocol": "6",
            })
            rc, said = pf.check()
            E.check(rc == 0, f"postfix check: {said}")
            pf.start()
            rcpt = gendb.ACTIVE_ACCOUNT
            mailbox = "d0001.example/u000001/"

            def deliver(sender):
                token = "dkim-" + uuid.uuid4().hex
                pf.send(rcpt, token, sender=sender)
                found, waited = E.wait_for(lambda: find_message(pf, mailbox, token), 60, 0.1)
                E.check(found, f"mail from {sender} did not arrive in {waited:.0f} s; maillog:\n"
                        f"{pf.maillog_text()[-3000:]}\nopendkim:\n{od.log()[-2000:]}")
                return found

            def verify(msg, want_selector="mail", want_domain="d0001.example"):
                sig = [ln for ln in msg.split(b"\n") if ln.lower().startswith(b"dkim-signature:")]
                E.check(sig, f"no DKIM-Signature header:\n{msg[:2000].decode(errors='replace')}")
                E.check(re.search(rb"\bd=" + want_domain.encode() + rb";", msg) and
                        re.search(rb"\bs=" + want_selector.encode() + rb";", msg),
                        f"the signature is not d={want_domain} s={want_selector}: {sig[0]!r}")
                E.check(dkim.verify(msg, dnsfunc=dns_from_db), "the signature does not verify with the"
                        " database's dkim_public_key")

            first = {}

            def signed():
                first["msg"] = deliver(gendb.ACTIVE_ACCOUNT)
                verify(first["msg"])
            checks.run("mail from an active domain is signed and verifies against dkim_public_key", signed)

            def unsigned():
                msg = deliver("someone@d0002.example")
                E.check(b"dkim-signature:" not in msg.lower(), "mail of a domain without a key was signed")
            checks.run("a domain without a key is not signed", unsigned)

            def key_change():
                priv, pub = gendb.dkim_keypair()
                old_pub = keys[1][1]
                n_reloads = E.read_text(reloads).count("reloaded")
                E.commit(db, [("UPDATE domains SET dkim_private_key = ?, dkim_public_key = ? WHERE id = 1",
                               (priv, pub))])
                ok, waited = E.wait_for(lambda: E.read_text(key1) == priv
                                        and E.read_text(reloads).count("reloaded") > n_reloads, 15, 0.05)
                E.check(ok, f"the new key was not written and OpenDKIM not reloaded after {waited:.1f} s;"
                        f" mapsyncd:\n{daemon.log()[-3000:]}")
                E.log(f"     new key in place and OpenDKIM reloaded {waited:.2f} s after COMMIT")
                msg = deliver(gendb.ACTIVE_ACCOUNT)
                verify(msg)
                E.check(not dkim.verify(msg, dnsfunc=lambda n, timeout=5: ("v=DKIM1; k=rsa; p=" + old_pub).encode()),
                        "new mail still verifies with the old key")
                E.check(not dkim.verify(first["msg"], dnsfunc=dns_from_db),
                        "mail signed with the old key verifies with the new one")
            checks.run("after a key change new mail verifies with the new key only", key_change)

            def new_domain_key():
                priv, pub = gendb.dkim_keypair()
                n_reloads = E.read_text(reloads).count("reloaded")
                E.commit(db, [("UPDATE domains SET dkim_selector = 's2', dkim_private_key = ?,"
                               " dkim_public_key = ? WHERE id = 2", (priv, pub))])
                ok, waited = E.wait_for(lambda: "s2._domainkey.d0002.example" in E.read_text(signing_table)
                                        and os.path.exists(os.path.join(key_dir, "d0002.example.s2.private")),
                                        15, 0.05)
                E.check(ok, f"d0002.example's key and tables not written after {waited:.1f} s")
                # The reload that follows the tables.
                ok, waited = E.wait_for(lambda: E.read_text(reloads).count("reloaded") > n_reloads, 15, 0.05)
                E.check(ok, f"OpenDKIM not reloaded {waited:.1f} s after the tables changed")
                msg = deliver("someone@d0002.example")
                verify(msg, "s2", "d0002.example")
            checks.run("a domain given a key in the panel is signed after the reload", new_domain_key)

            def no_key_in_logs():
                texts = [daemon.log(), od.log(), pf.maillog_text(), "\n".join(daemon.notifications)]
                for did, (priv, pub) in keys.items():
                    for ln in priv.splitlines()[1:-1]:
                        for t in texts:
                            E.check(ln not in t, "a line of a private key is in a log")
                for t in texts:
                    E.check("PRIVATE KEY-----" not in t, "a PEM armour line is in a log")
            checks.run("no key material in mapsyncd's, OpenDKIM's or Postfix's log, nor in STATUS", no_key_in_logs)
            checks.expect("mapsyncd still runs", daemon.alive(), f"mapsyncd exited {daemon.proc.returncode}")
        finally:
            status = daemon.stop()
            if pf:
                pf.stop()
            if od:
                od.stop()
            E.log(f"mapsyncd stopped (exit status {status}); its log:\n{daemon.log()[-4000:]}")
            if od:
                E.log(f"OpenDKIM log:\n{od.log()[-3000:]}")


def find_message(pf, mailbox, token):
    d = os.path.join(pf.vmail, mailbox, "new")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return None
    for n in names:
        with open(os.path.join(d, n), "rb") as f:
            data = f.read()
        if token.encode() in data:
            return data
    return None


if __name__ == "__main__":
    E.main(test)
