#!/usr/bin/env python3
"""contrib/laravel/Client.php, run by Debian's php-cli with php-curl,
against the real daemon: sync after a commit (the map holds it when sync()
returns), syncLater() + status() long poll, SyncFailed on a failing hook,
Unavailable without a daemon."""

import json
import os
import subprocess

import harness
from apilib import api_section
from harness import read

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
    os.environ.pop(_v, None)

CLIENT = os.path.join(harness.SRC, "contrib", "laravel", "Client.php")
SLOW = {"debounce_ms": 3000, "max_delay_ms": 6000}

# Each run: a PHP snippet with $c = new Client(socket); prints JSON.
PHP = r'''<?php
require %(client)s;
$c = new \Mapsyncd\Client(%(sock)s, 30);
try {
    %(code)s
} catch (\Mapsyncd\SyncFailed $e) {
    echo json_encode(['exception' => 'SyncFailed', 'status' => $e->httpStatus, 'answer' => $e->answer,
                      'message' => $e->getMessage()]);
} catch (\Mapsyncd\Unavailable $e) {
    echo json_encode(['exception' => 'Unavailable', 'message' => $e->getMessage()]);
}
'''


class PhpClient(harness.DaemonTestCase):

    def php(self, code):
        script = PHP % {"client": json.dumps(CLIENT), "sock": json.dumps(self.sock), "code": code}
        r = subprocess.run(["php", "-d", "display_errors=stderr", "-r", script[len("<?php\n"):]],
                           capture_output=True, text=True, timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def start_api(self, text=None, **kw):
        self.sock = os.path.join(self.env.dir, "api.sock")
        text = text if text is not None else self.env.shipped_config(sync=SLOW)
        return self.start(text + api_section(self.sock), **kw)

    def test_sync_and_status(self):
        self.start_api()
        w = self.writer()
        for q in (6001, 6002, 6003):
            w.execute(("UPDATE email_accounts SET quota = ? WHERE id = 1", (q,)))
            a = self.php("echo json_encode($c->sync());")
            self.assertTrue(a["ok"], a)
            # When sync() returns, the map holds the commit made before it.
            self.assertIn("storage=%dM" % q, read(self.env.output("passwd")))
            self.assertEqual({m["name"]: m["status"] for m in a["maps"]}["passwd"], "changed")
            self.assertIn("passwd", [h["name"] for h in a["hooks"]])
        # syncLater() and a long poll for its generation.
        a = self.php("$g = $c->syncLater(); $s = $c->status($g - 1, 20);"
                     "echo json_encode(['g' => $g, 's' => $s]);")
        self.assertGreaterEqual(a["s"]["generation"], a["g"])
        self.assertEqual(sorted(m["name"] for m in a["s"]["maps"]), sorted(harness.MAPS))

    def test_failing_hook_throws(self):
        hook = harness.write_script(self.env, "fail.sh", "exit 4\n")
        self.start_api(harness.config_with_hook(self.env, hook, sync=SLOW), ready=False).wait_ready(30)
        self.writer().execute(("UPDATE email_accounts SET quota = ? WHERE id = 1", (6100,)))
        a = self.php("echo json_encode($c->sync());")
        self.assertEqual(a.get("exception"), "SyncFailed", a)
        self.assertEqual(a["status"], 500)
        self.assertFalse(a["answer"]["ok"])
        self.assertIn("hook passwd failed", a["message"])

    def test_every_php_file_parses(self):
        root = os.path.join(harness.SRC, "contrib", "laravel")
        files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".php")]
        self.assertGreaterEqual(len(files), 3)
        for f in files:
            r = subprocess.run(["php", "-l", f], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_no_daemon(self):
        self.sock = os.path.join(self.env.dir, "nothing.sock")
        a = self.php("echo json_encode($c->sync());")
        self.assertEqual(a.get("exception"), "Unavailable", a)
        self.assertIn(self.sock, a["message"])


if __name__ == "__main__":
    harness.main()
