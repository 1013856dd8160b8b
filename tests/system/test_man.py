#!/usr/bin/env python3
"""The man pages: they render without a warning, and they name what the
program has.

    test_man.py PAGE...   (the generated pages from the build directory)

- `mandoc -T lint -W warning` reports nothing and `groff -ww -man -Tutf8`
  warns about nothing;
- mapsyncd(8) names every option `mapsyncd --help` lists (and no other),
  every MESSAGE_ID and MAPSYNCD_* journal field of include/log.h;
- mapsyncd.conf(5) names every configuration key src/config.c accepts.
Environment: MAPSYNCD, the binary.
"""
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))


def plain(page):
    """The page as text, without roff escapes for minus and quotes."""
    r = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=200", page],
                       capture_output=True, text=True, check=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"})
    return re.sub(r".\x08", "", r.stdout).replace("\u2010", "-").replace("\u2212", "-")


def lint(page):
    problems = []
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", page],
                       capture_output=True, text=True)
    if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
        problems.append(f"mandoc -T lint (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    r = subprocess.run(["groff", "-ww", "-z", "-man", "-Tutf8", page],
                       capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    if r.returncode != 0 or r.stderr.strip():
        problems.append(f"groff -ww (exit {r.returncode}):\n{r.stderr}")
    return problems


def check_daemon_page(text):
    problems = []
    help_text = subprocess.run([os.environ["MAPSYNCD"], "--help"], capture_output=True,
                               text=True, check=True).stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", help_text))
    # The tags of the OPTIONS list: its lines that start with a '-'.
    section = text.split("\nOPTIONS\n", 1)[1].split("\nSIGNALS\n", 1)[0]
    tags = "\n".join(ln for ln in section.splitlines() if re.match(r" {7}-", ln))
    documented = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])\b", tags))
    for o in sorted(options - documented):
        problems.append(f"mapsyncd.8: OPTIONS lacks {o} (in mapsyncd --help)")
    for o in sorted(documented - options):
        problems.append(f"mapsyncd.8: OPTIONS has {o}, which mapsyncd --help does not list")
    log_h = open(os.path.join(SRC, "include", "log.h")).read()
    for name, msgid in re.findall(r'#define MSGID_(\w+)\s+"([0-9a-f]{32})"', log_h):
        if msgid not in text:
            problems.append(f"mapsyncd.8: MESSAGE_ID {msgid} (MSGID_{name}) is missing")
    for msgid in set(re.findall(r"\b[0-9a-f]{32}\b", text)):
        if msgid not in log_h:
            problems.append(f"mapsyncd.8: MESSAGE_ID {msgid} is not in include/log.h")
    for field in sorted(set(re.findall(r"\bMAPSYNCD_[A-Z0-9_]+", log_h))):
        if field not in text:
            problems.append(f"mapsyncd.8: journal field {field} is missing")
    return problems


def check_conf_page(text):
    problems = []
    config_c = open(os.path.join(SRC, "src", "config.c")).read()
    keys = set(re.findall(r'streq\(key, "(\w+)"\)', config_c))
    assert keys, "src/config.c: no keys found"
    for key in sorted(keys):
        if not re.search(rf"^ *{key} = ", text, re.M):
            problems.append(f"mapsyncd.conf.5: key {key} is not described")
    return problems


def main():
    for tool in ("mandoc", "groff"):
        if shutil.which(tool) is None:
            print(f"SKIP: {tool} is not installed (tools/install-deps test)")
            sys.exit(77)
    problems = []
    for page in sys.argv[1:]:
        problems += lint(page)
        text = plain(page)
        name = os.path.basename(page)
        if name == "mapsyncd.8":
            problems += check_daemon_page(text)
        elif name == "mapsyncd.conf.5":
            problems += check_conf_page(text)
        print(f"{name}: {len(text.splitlines())} lines rendered")
    for p in problems:
        print(p)
    assert not problems, f"{len(problems)} problems"
    print("PASS")


if __name__ == "__main__":
    main()
