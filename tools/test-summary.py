#!/usr/bin/env python3
"""Prints the closing line CI reads, "N passed, N failed[, N skipped]",
from the testlog.json files of meson test runs (one JSON object a line),
after a line per test that did not pass. Exit status 1 when any failed."""

import json
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        f = open(path)
    except FileNotFoundError:
        print("no test results in %s" % path)
        failed += 1
        continue
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            result = t.get("result", "")
            if result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            elif result == "SKIP":
                skipped += 1
            else:
                failed += 1
                print("%s: %s (%s)" % (result, t.get("name"), path))
tail = ", %d skipped" % skipped if skipped else ""
print("%d passed, %d failed%s" % (passed, failed, tail))
sys.exit(1 if failed or passed == 0 else 0)
