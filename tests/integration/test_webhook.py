#!/usr/bin/env python3
"""Webhooks from the real daemon to a receiver on 127.0.0.1 (http.server):
signed bodies with unique delivery ids after a change of a covered map;
a receiver down for 10 s gets the change once it is back while the daemon
went on syncing; a newer change supersedes an undelivered one."""

import hashlib
import hmac
import http.server
import json
import os
import re
import socket
import threading
import time

import harness
from apilib import api_section, request
from harness import read, wait_for

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
    os.environ.pop(_v, None)

SECRET = b"s3cr3t with spaces \xc3\xa9"
SLOW = {"debounce_ms": 3000, "max_delay_ms": 6000}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers
    with .status (200 unless told otherwise)."""

    def __init__(self, port=0):
        self.requests = []
        self.status = 200
        self.lock = threading.Lock()
        self.port = port
        self.server = None
        self.start()

    def start(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rec.lock:
                    status = rec.status
                    rec.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in
                                                                        self.headers.items()},
                                         "body": body, "status": status, "t": time.monotonic()})
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def got(self):
        with self.lock:
            return list(self.requests)

    def delivered(self):
        return [r for r in self.got() if 200 <= r["status"] < 300]


class Webhooks(harness.DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.rx = Receiver()
        self.secret = os.path.join(self.env.dir, "hook.secret")
        with open(self.secret, "wb") as f:
            f.write(SECRET + b"\n")
        os.chmod(self.secret, 0o600)
        self.sock = os.path.join(self.env.dir, "api.sock")

    def tearDown(self):
        try:
            self.rx.stop()
        except Exception:
            pass
        super().tearDown()

    def config(self, maps="vmailbox passwd virtual_aliases", extra=""):
        return (self.env.shipped_config(sync=SLOW) + api_section(self.sock)
                + "\n[webhook panel]\nurl = http://127.0.0.1:%d/mapsyncd\nsecret_file = %s\nmaps = %s\n"
                  "timeout_s = 30\n%s" % (self.rx.port, self.secret, maps, extra))

    def first_delivered(self, d):
        # Delivered as far as the daemon knows, not only received.
        d.wait_log(r"webhook panel: delivered \S+ \(generation 1\)", timeout=40)
        self.assertEqual(len(self.rx.got()), 1, self.rx.got())

    def check_signed(self, r):
        h = r["headers"]
        want = "sha256=" + hmac.new(SECRET, r["body"], hashlib.sha256).hexdigest()
        self.assertEqual(h.get("x-mapsyncd-signature-256"), want)
        self.assertRegex(h.get("x-mapsyncd-delivery", ""), UUID)
        self.assertEqual(h.get("content-type"), "application/json")
        self.assertEqual(r["path"], "/mapsyncd")
        j = json.loads(r["body"])
        self.assertEqual(j["event"], "maps_changed")
        return j

    def commit(self, sql, params=()):
        self.writer_ = getattr(self, "writer_", None) or self.writer()
        self.writer_.execute((sql, params))

    def test_signed_delivery_of_covered_maps(self):
        d = self.start(self.config())
        # The first cycle wrote every map: one delivery naming the covered ones.
        self.first_delivered(d)
        first = self.check_signed(self.rx.delivered()[0])
        self.assertEqual(sorted(m["name"] for m in first["maps"]), ["passwd", "virtual_aliases", "vmailbox"])
        self.commit("UPDATE email_accounts SET quota = ? WHERE id = 1", (4321,))
        a = request(self.sock, "POST", "/v1/sync")
        self.assertEqual(a.status, 200, a)
        gen = a.json["generation"]
        sha = {m["name"]: m for m in a.json["maps"]}["passwd"]
        wait_for(lambda: len(self.rx.delivered()) >= 2, 20, what="the second delivery")
        r = self.rx.delivered()[1]
        j = self.check_signed(r)
        self.assertEqual(j["generation"], gen)
        self.assertEqual(j["maps"], [{"name": "passwd", "sha256": sha["sha256"], "rows": sha["rows"]}])
        ids = [x["headers"]["x-mapsyncd-delivery"] for x in self.rx.got()]
        self.assertEqual(len(ids), len(set(ids)), "delivery ids repeat")
        # A change of a map the webhook does not cover: no delivery.
        self.commit("INSERT INTO domains (domain, active) VALUES ('nobody.example', 1)")
        a = request(self.sock, "POST", "/v1/sync")
        self.assertEqual({m["name"]: m["status"] for m in a.json["maps"]}["virtual_domains"], "changed")
        time.sleep(1.0)
        self.assertEqual(len(self.rx.got()), 2)

    def test_receiver_down_for_10_s(self):
        d = self.start(self.config())
        self.first_delivered(d)
        n0 = len(self.rx.got())
        self.rx.stop()
        t_down = time.monotonic()
        self.commit("UPDATE email_accounts SET quota = ? WHERE id = 1", (777,))
        a = request(self.sock, "POST", "/v1/sync")
        # The daemon synced meanwhile, without waiting for the webhook.
        self.assertEqual(a.status, 200, a)
        self.assertIn("storage=777M", read(self.env.output("passwd")))
        gen = a.json["generation"]
        sha = {m["name"]: m["sha256"] for m in a.json["maps"]}["passwd"]
        d.wait_log(r"webhook panel: delivery \S+ \(generation %d\) .* failed" % gen, timeout=10)
        # Still syncing while the receiver is away.
        self.commit("UPDATE email_accounts SET quota = ? WHERE id = 1", (778,))
        a = request(self.sock, "POST", "/v1/sync")
        self.assertEqual(a.status, 200, a)
        gen = a.json["generation"]
        sha = {m["name"]: m["sha256"] for m in a.json["maps"]}["passwd"]
        time.sleep(max(0, 10 - (time.monotonic() - t_down)))
        self.rx = Receiver(self.rx.port)
        t_up = time.monotonic()
        wait_for(lambda: self.rx.delivered(), 70, what="the delivery once the receiver is back")
        r = self.rx.delivered()[0]
        j = self.check_signed(r)
        self.assertEqual(j["generation"], gen)
        self.assertEqual({m["name"]: m["sha256"] for m in j["maps"]}["passwd"], sha)
        print("receiver back after %.1f s; delivered %.1f s later" % (t_up - t_down, r["t"] - t_up))
        self.assertGreater(n0, 0)

    def test_newer_change_supersedes_an_undelivered_one(self):
        d = self.start(self.config())
        self.first_delivered(d)
        n0 = len(self.rx.got())
        self.rx.status = 500
        self.commit("UPDATE email_accounts SET quota = ? WHERE id = 1", (901,))
        gen_a = request(self.sock, "POST", "/v1/sync").json["generation"]
        wait_for(lambda: len(self.rx.got()) >= n0 + 2, 20, what="the first delivery and its retry to fail")
        first = self.rx.got()[n0:]
        id_a = first[0]["headers"]["x-mapsyncd-delivery"]
        self.assertEqual(json.loads(first[0]["body"])["generation"], gen_a)
        # A retry is the same delivery: same id, same body.
        self.assertEqual(first[1]["headers"]["x-mapsyncd-delivery"], id_a)
        self.assertEqual(first[1]["body"], first[0]["body"])
        # A newer change of another map while A is undelivered.
        self.commit("UPDATE aliases SET destination = destination || '.x' WHERE rowid = "
                    "(SELECT min(rowid) FROM aliases WHERE active = 1)")
        a = request(self.sock, "POST", "/v1/sync")
        self.assertEqual({m["name"]: m["status"] for m in a.json["maps"]}["virtual_aliases"], "changed", a)
        gen_b = a.json["generation"]
        shas = {m["name"]: m["sha256"] for m in a.json["maps"]}
        # A retry of A may be in flight as the cycle ends (B then follows
        # it): the receiver answers 200 only once B has been tried, when A
        # is superseded and can no longer be sent. A flip right after the
        # answer could let that retry of A through (seen under load).
        wait_for(lambda: [x for x in self.rx.got() if json.loads(x["body"])["generation"] == gen_b], 30,
                 what="the first attempt of the superseding delivery")
        self.rx.status = 200
        wait_for(lambda: self.rx.delivered()[1:] if len(self.rx.delivered()) > 1 else None, 30,
                 what="the superseding delivery")
        time.sleep(1.5)
        r = self.rx.delivered()[-1]
        j = self.check_signed(r)
        # The newer delivery names both changes, at the newer generation,
        # under an id of its own; A was never delivered and is not retried.
        self.assertEqual(j["generation"], gen_b)
        self.assertEqual({m["name"]: m["sha256"] for m in j["maps"]},
                         {"passwd": shas["passwd"], "virtual_aliases": shas["virtual_aliases"]})
        self.assertNotEqual(r["headers"]["x-mapsyncd-delivery"], id_a)
        self.assertEqual(len(self.rx.delivered()), 2)
        after = [x for x in self.rx.got() if x["t"] > r["t"]]
        self.assertEqual(after, [])
        self.assertFalse([x for x in self.rx.delivered() if x["headers"]["x-mapsyncd-delivery"] == id_a])
        d.wait_log(r"webhook panel: delivered", count=2)

    def test_undelivered_change_survives_a_restart(self):
        d = self.start(self.config())
        self.first_delivered(d)
        self.rx.stop()
        self.commit("UPDATE email_accounts SET quota = ? WHERE id = 1", (8080,))
        a = request(self.sock, "POST", "/v1/sync")
        self.assertEqual(a.status, 200, a)
        d.wait_log(r"webhook panel: delivery \S+ \(generation %d\) .* failed" % a.json["generation"], timeout=10)
        state = os.path.join(self.env.state, "owed-webhooks")
        self.assertEqual([ln for ln in read(state).splitlines() if not ln.startswith("#")], ["panel passwd"])
        d.kill()
        self.rx = Receiver(self.rx.port)
        d2 = self.daemon()
        d2.wait_ready()
        d2.wait_log(r"webhook panel: delivered", timeout=20)
        j = self.check_signed(self.rx.delivered()[-1])
        self.assertEqual([m["name"] for m in j["maps"]], ["passwd"])
        self.assertEqual(j["maps"][0]["sha256"], hashlib.sha256(read(self.env.output("passwd"), "rb")).hexdigest())
        wait_for(lambda: not os.path.exists(state), 10, what="owed-webhooks to go")

    def test_secret_file_readable_by_others_is_refused(self):
        os.chmod(self.secret, 0o644)
        self.env.write_config(self.config())
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("[webhook panel] secret_file %s: others than its owner" % self.secret, r.stderr)
        d = self.start(self.config())
        d.wait_log(r"\[webhook panel\] secret_file %s: others than its owner" % re.escape(self.secret))
        self.commit("UPDATE email_accounts SET quota = ? WHERE id = 1", (5,))
        self.assertEqual(request(self.sock, "POST", "/v1/sync").status, 200)
        time.sleep(0.5)
        self.assertEqual(self.rx.got(), [])


if __name__ == "__main__":
    harness.main()
