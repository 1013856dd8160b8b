#!/usr/bin/env python3
"""The seed's container topology, end to end, with podman.

contrib/container/compose.yaml is read and its services started the way
compose would (images built from their contexts, bind mounts relative to
the project directory, the named volume, network mailnet, depends_on
order, network_mode none), with two differences: each run gets its own
network and volume names, and `ports:` are not published (nothing here may
bind the host's ports 25 and 143); the clients (topology_client.py) run in
the network namespace of a probe container on mailnet instead.

- admin: PHP-FPM; every request opens the database, writes one
  transaction, commits and closes (panel.php), as Laravel does;
- postfix: virtual mailboxes from the lmdb tables in the shared
  config/postfix, Maildirs in the shared data/mail;
- dovecot: IMAP logins from the passwd-file in the shared config/dovecot;
- mapsyncd: the sidecar image, the database directory mounted read-only.

The test adds a mailbox through the panel and measures how long until
Postfix accepts mail for it (RCPT TO) and Dovecot lets its user log in;
sends it a message over SMTP and finds it over IMAP; adds an alias, sends
through it, deletes it and measures how long until Postfix refuses it
(550). The bounds are generous (the README states the latencies:
debounce_ms 200 ms, then Postfix's next lookup and Dovecot's passwd-file
check at most once a second); the figures are printed.

    test_topology.py [rollback|wal]     (the database's journal mode)

Environment (set by meson): MAPSYNCD_BUILD_ROOT.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tools"))
import engine  # noqa: E402
import gendb  # noqa: E402

COMPOSE_DIR = os.path.join(SRC, "contrib", "container")
WWW = (33, 33)
BOUND = 15.0  # seconds: generous; the figures are printed
DOMAIN = "d0001.example"


def step(msg, t0=[time.monotonic()]):
    print(f"[{time.monotonic() - t0[0]:6.1f} s] {msg}", flush=True)


def wait_for(what, fn, timeout, interval=0.1):
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        value = fn()
        if value:
            return value, time.monotonic() - t0
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Project:
    """compose.yaml's services on podman, under unique names."""

    def __init__(self, p, tmp):
        self.p = p
        self.tmp = tmp
        self.id = uuid.uuid4().hex[:8]
        with open(os.path.join(COMPOSE_DIR, "compose.yaml")) as f:
            self.spec = yaml.safe_load(f)
        self.services = self.spec["services"]
        self.networks = {n: f"mailnet-{self.id}" if n == "mailnet" else f"{n}-{self.id}"
                         for n in self.spec.get("networks", {})}
        self.volumes = {v: f"{v}-{self.id}" for v in self.spec.get("volumes", {})}
        self.containers = {}
        self.images = {}

    def name(self, svc):
        return f"topo-{svc}-{self.id}"

    def order(self):
        done, out = set(), []

        def visit(s):
            if s in done:
                return
            for dep in self.services[s].get("depends_on", []):
                visit(dep)
            done.add(s)
            out.append(s)
        for s in self.services:
            visit(s)
        return out

    def build(self):
        for svc, spec in self.services.items():
            b = spec.get("build")
            if isinstance(b, str):
                tag = f"localhost/topology-{svc}:test"
                self.p.base_image()
                t0 = time.monotonic()
                self.p("build", "--pull=never", "--network=host", "--layers", "-t", tag,
                       os.path.join(COMPOSE_DIR, b), timeout=900)
                step(f"built {tag} ({time.monotonic() - t0:.0f} s)")
            else:
                # The sidecar: contrib/container/Containerfile (engine.Podman).
                assert b["dockerfile"] == "contrib/container/Containerfile", b
                tag = self.p.build_image()
                step(f"built {tag}")
            self.images[svc] = tag

    def create_shared(self):
        for n in self.networks.values():
            self.p("network", "create", "--internal", n)
        for v in self.volumes.values():
            self.p("volume", "create", v)

    def run_argv(self, svc):
        spec = self.services[svc]
        argv = ["run", "-d", "--name", self.name(svc), "--hostname", svc]
        if spec.get("network_mode"):
            argv += ["--network", spec["network_mode"]]
        for n in spec.get("networks", []):
            argv += ["--network", self.networks[n], "--network-alias", svc]
        for v in spec.get("volumes", []):
            src, dst, *mode = v.split(":")
            if src.startswith("./"):
                src = os.path.join(self.tmp, src[2:])
            else:
                src = self.volumes[src]
            argv += ["-v", ":".join([src, dst] + mode)]
        return argv + [self.images[svc]]

    def start(self, svc):
        self.p(*self.run_argv(svc))
        self.containers[svc] = self.name(svc)

    def ip(self, svc):
        net = self.networks["mailnet"]
        return self.p("inspect", "--format",
                      f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}',
                      self.name(svc)).stdout.strip()

    def logs(self, svc):
        r = self.p("logs", self.name(svc), check=False)
        return (r.stdout or "") + (r.stderr or "")

    def down(self):
        self.p.remove_containers(*self.containers.values())
        for v in self.volumes.values():
            self.p("volume", "rm", "--force", v, check=False)
        for n in self.networks.values():
            self.p("network", "rm", "--force", n, check=False)


class Probe:
    """A container on mailnet whose network namespace the clients use."""

    def __init__(self, proj):
        self.proj = proj
        self.name = f"topo-probe-{proj.id}"
        proj.p("run", "-d", "--name", self.name, "--network", proj.networks["mailnet"],
               engine.BASE_TAGS[0], "sleep", "infinity")
        proj.containers["probe"] = self.name
        self.pid = int(proj.p("inspect", "--format", "{{.State.Pid}}", self.name).stdout)

    def __call__(self, **args):
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-n", "--", sys.executable,
                            os.path.join(HERE, "topology_client.py"), json.dumps(args)],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"client {args['op']}: exit {r.returncode}\n{r.stderr}")
        return json.loads(r.stdout)


def sidecar_config(dovecot_gid):
    text = open(os.path.join(SRC, "conf", "mapsyncd.conf")).read()
    text, n = re.subn(r"(?m)^group = dovecot$", f"group = {dovecot_gid}", text)
    assert n == 1, "the shipped configuration changed: no 'group = dovecot' line"
    return text


def test(journal):
    if os.geteuid() != 0:
        print("SKIP: needs root (podman with a private rootful store, nsenter)")
        sys.exit(77)
    p = engine.Podman()
    with tempfile.TemporaryDirectory(prefix="mapsyncd-topology-") as tmp:
        proj = Project(p, tmp)
        proj.build()
        for d in ("data/admin", "data/mail", "config/postfix", "config/dovecot", "mapsyncd"):
            os.makedirs(os.path.join(tmp, d))
        db = os.path.join(tmp, "data", "admin", "database.sqlite")
        subprocess.run([sys.executable, os.path.join(SRC, "tools", "gendb.py"), "--accounts", "50",
                        "--journal", "wal" if journal == "wal" else "delete", db],
                       check=True, capture_output=True)
        for f in (os.path.dirname(db), db):
            os.chown(f, *WWW)
        gid = p("run", "--rm", "--network=none", "--entrypoint", "getent",
                proj.images["dovecot"], "group", "dovecot").stdout.split(":")[2]
        with open(os.path.join(tmp, "mapsyncd", "mapsyncd.conf"), "w") as f:
            f.write(sidecar_config(gid))
        try:
            proj.create_shared()
            for svc in proj.order():
                proj.start(svc)
            step(f"started {', '.join(proj.order())} on {proj.networks['mailnet']}")
            probe = Probe(proj)
            ip = {s: proj.ip(s) for s in ("admin", "postfix", "dovecot")}
            wait_for("the SMTP banner", lambda: "ESMTP" in probe(op="banner", host=ip["postfix"],
                                                                   port=25).get("banner", ""), 60, 0.5)
            wait_for("the IMAP banner", lambda: "OK" in probe(op="banner", host=ip["dovecot"],
                                                                 port=143).get("banner", ""), 60, 0.5)
            wait_for("vmailbox.lmdb", lambda: os.path.exists(
                os.path.join(tmp, "config", "postfix", "vmailbox.lmdb")), 60)
            step("Postfix and Dovecot answer; mapsyncd wrote the maps")

            def panel(**query):
                r = probe(op="panel", host=ip["admin"], script="/var/www/panel/panel.php",
                          query=query)
                assert r.get("ok"), f"panel {query}: {r}\n{proj.logs('admin')}"
                want = "wal" if journal == "wal" else "delete"
                assert r["journal_mode"] == want, r
                return r

            def rcpt(addr):
                r = probe(op="rcpt", host=ip["postfix"], sender="sender@external.example",
                          rcpt=addr)
                assert "exception" not in r, r
                return r["code"]

            # A mailbox added in the panel.
            user, password = f"topo-{proj.id}@{DOMAIN}", gendb.TEST_PASSWORDS[0]
            assert rcpt(user) == 550
            panel(action="add_account", email=user, password=gendb.TEST_HASHES[0], quota=100)
            _, t_smtp = wait_for("Postfix to accept the new mailbox",
                                 lambda: rcpt(user) == 250, BOUND)
            _, t_imap = wait_for("Dovecot to let the new user log in",
                                 lambda: probe(op="imap", host=ip["dovecot"], user=user,
                                               password=password).get("login"), BOUND)
            step(f"new mailbox: RCPT TO accepted {t_smtp:.2f} s and IMAP login "
                 f"{t_imap:.2f} s after the panel's commit")
            subject = f"topology-{proj.id}"
            r = probe(op="send", host=ip["postfix"], sender="sender@external.example",
                      rcpt=user, subject=subject, body="hello over SMTP")
            assert r == {"refused": {}}, r
            wait_for("the message over IMAP",
                     lambda: probe(op="imap", host=ip["dovecot"], user=user, password=password,
                                   subject=subject).get("found") == 1, 30, 0.5)
            step("a message sent over SMTP is in the new user's INBOX over IMAP")

            # An alias added, used, deleted.
            alias = f"topo-alias-{proj.id}@{DOMAIN}"
            panel(action="add_alias", source=alias, destination=user)
            _, t_alias = wait_for("Postfix to accept the alias", lambda: rcpt(alias) == 250, BOUND)
            r = probe(op="send", host=ip["postfix"], sender="sender@external.example",
                      rcpt=alias, subject=subject + "-alias", body="through the alias")
            assert r == {"refused": {}}, r
            wait_for("the aliased message over IMAP",
                     lambda: probe(op="imap", host=ip["dovecot"], user=user, password=password,
                                   subject=subject + "-alias").get("found") == 1, 30, 0.5)
            panel(action="delete_alias", source=alias)
            _, t_gone = wait_for("Postfix to refuse the deleted alias", lambda: rcpt(alias) == 550,
                                 BOUND)
            step(f"alias: accepted {t_alias:.2f} s after its commit, delivered to the mailbox; "
                 f"deleted: refused (550) {t_gone:.2f} s after the delete")
            logs = proj.logs("mapsyncd")
            assert "error" not in logs.lower(), f"mapsyncd logged an error:\n{logs}"
            print(json.dumps({"journal": journal, "rcpt_accepted_s": round(t_smtp, 2),
                              "imap_login_s": round(t_imap, 2), "alias_s": round(t_alias, 2),
                              "alias_refused_s": round(t_gone, 2)}))
        except Exception:
            for svc in proj.containers:
                if svc != "probe":
                    print(f"--- podman logs {svc}\n{proj.logs(svc)[-4000:]}", file=sys.stderr)
            raise
        finally:
            proj.down()
            # Files the containers made as other users.
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "rollback"
    assert mode in ("rollback", "wal"), mode
    test(mode)
    print("PASS")
