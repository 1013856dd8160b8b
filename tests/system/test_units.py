#!/usr/bin/env python3
"""The shipped systemd units, checked offline.

    test_units.py verify UNIT...    systemd-analyze verify --man=no is silent
    test_units.py security UNIT...  systemd-analyze security --offline=true
                                    scores each unit <= MAX_EXPOSURE (printed)

UNIT is a configured unit file from the build directory. For verify, a copy
in a temporary directory runs $MAPSYNCD instead of the installed path (which
need not exist on a build host), and a template is checked through an
instance (mapsyncd@check.service).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

MAX_EXPOSURE = 1.5


def skip_without_analyze():
    if shutil.which("systemd-analyze") is None:
        print("SKIP: systemd-analyze is not installed")
        sys.exit(77)


def copy_units(units, tmp):
    """Copies units into tmp with ExecStart's binary replaced by $MAPSYNCD;
    returns the names to check (templates as an instance)."""
    binary = os.environ["MAPSYNCD"]
    names = []
    for unit in units:
        name = os.path.basename(unit)
        text = open(unit).read()
        text, n = re.subn(r"^(ExecStart=)\S+/mapsyncd\b", lambda m: m.group(1) + binary, text,
                          flags=re.M)
        assert n == 1 or name.endswith(".socket"), f"{unit}: no ExecStart=.../mapsyncd line"
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
        names.append(name.replace("@.", "@check."))
    return names


def verify(units):
    with tempfile.TemporaryDirectory() as tmp:
        names = copy_units(units, tmp)
        argv = ["systemd-analyze", "verify", "--man=no", *[os.path.join(tmp, n) for n in names]]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        out = (r.stdout + r.stderr).replace(tmp + "/", "")
        print(f"$ systemd-analyze verify --man=no {' '.join(names)}: exit {r.returncode}")
        if out.strip():
            print(out)
        assert r.returncode == 0 and not out.strip(), "systemd-analyze verify is not clean"


def security(units):
    failed = []
    for unit in units:
        with tempfile.TemporaryDirectory() as tmp:
            name = copy_units([unit], tmp)[0]
            r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                                os.path.join(tmp, name)],
                               capture_output=True, text=True, timeout=60)
        print(r.stdout + r.stderr)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
        assert m, f"{name}: no exposure level in systemd-analyze's output"
        score = float(m.group(1))
        print(f"{name}: exposure {score} (at most {MAX_EXPOSURE})")
        if score > MAX_EXPOSURE:
            failed.append(f"{name}: {score}")
    assert not failed, f"exposure above {MAX_EXPOSURE}: {', '.join(failed)}"


def main():
    skip_without_analyze()
    what, units = sys.argv[1], sys.argv[2:]
    {"verify": verify, "security": security}[what](units)
    print("PASS")


if __name__ == "__main__":
    main()
