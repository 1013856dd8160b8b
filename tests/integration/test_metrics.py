#!/usr/bin/env python3
"""metrics_file: the Prometheus text file a daemon keeps up to date."""

import os
import re

import harness
from harness import MAPS, wait_for

SAMPLE = re.compile(r'^([a-z_]+)(?:\{([a-z]+)="([^"]*)"\})? (\S+)$')


def parse(path):
    """Parses the text format strictly: every line a HELP, a TYPE or a
    sample; returns {(name, label value or None): float}."""
    samples, typed = {}, set()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# HELP "):
                continue
            if line.startswith("# TYPE "):
                name, kind = line.split()[2:4]
                assert kind in ("gauge", "counter"), line
                typed.add(name)
                continue
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            assert m.group(1) in typed, "sample before its TYPE: %r" % line
            samples[(m.group(1), m.group(3))] = float(m.group(4))
    return samples


class Metrics(harness.TestCase):

    def test_metrics_follow_the_daemon(self):
        path = os.path.join(self.env.dir, "metrics", "mapsyncd.prom")
        os.mkdir(os.path.dirname(path))
        self.env.write_config(sync={"metrics_file": path, "debounce_ms": "50"})
        d = self.daemon()
        d.wait_ready()
        m = wait_for(lambda: os.path.exists(path) and parse(path), what="metrics file")
        self.assertEqual(m[("mapsyncd_database_available", None)], 1)
        self.assertGreater(m[("mapsyncd_last_success_timestamp_seconds", None)], 1.6e9)
        want = harness.expected_maps(self.env.db)
        for name in MAPS:
            self.assertEqual(m[("mapsyncd_map_rows", name)], want[name].count("\n"), name)
            self.assertEqual(m[("mapsyncd_map_bytes", name)], len(want[name].encode()), name)
            self.assertEqual(m[("mapsyncd_map_replacements_total", name)], 1, name)
            self.assertEqual(m[("mapsyncd_map_failed", name)], 0, name)
            self.assertEqual(m[("mapsyncd_hook_runs_total", name)], 1, name)
            self.assertEqual(m[("mapsyncd_hook_failures_total", name)], 0, name)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o644)

        # One alias more: one replacement more for virtual_aliases alone.
        self.env.sql("INSERT INTO aliases (domain_id, source, destination, active) "
                     "VALUES (1, 'metrics@d0001.example', 'x@y.example', 1)")
        wait_for(lambda: parse(path).get(("mapsyncd_hook_runs_total", "virtual_aliases")) == 2,
                 what="second hook run of virtual_aliases")
        m = parse(path)
        self.assertEqual(m[("mapsyncd_map_replacements_total", "virtual_aliases")], 2)
        self.assertEqual(m[("mapsyncd_map_replacements_total", "vmailbox")], 1)
        self.assertGreater(m[("mapsyncd_map_last_change_timestamp_seconds", "virtual_aliases")], 1.6e9)
        self.assertGreaterEqual(m[("mapsyncd_syncs_total", None)], 2)

        # The database goes away: available 0, the maps stay.
        os.rename(self.env.db, self.env.db + ".away")
        d.signal(__import__("signal").SIGUSR1)
        wait_for(lambda: parse(path).get(("mapsyncd_database_available", None)) == 0,
                 what="database_available 0")
        self.assertGreaterEqual(parse(path)[("mapsyncd_sync_failures_total", None)], 1)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["mapsyncd.prom"], "temporary files left")


if __name__ == "__main__":
    harness.main()
