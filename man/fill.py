#!/usr/bin/env python3
"""Fills in a man page template: @VERSION@, @DATE@ and @sysconfdir@, and
@EXAMPLE_CONFIG@ with the shipped configuration (its comment lines left
out), escaped for a roff .EX block, so that the page's example is always
the file that is installed.

    fill.py TEMPLATE OUTPUT CONFIG VERSION DATE SYSCONFDIR
"""
import re
import sys


def roff_example(text):
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith(("#", ";")):
            continue
        if not line.strip():
            if lines and lines[-1] != "":
                lines.append("")
            continue
        line = line.replace("\\", "\\e").replace("-", "\\-")
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines)


def main(template, output, config, version, date, sysconfdir):
    values = {
        "VERSION": version,
        "DATE": date,
        "sysconfdir": sysconfdir,
        "EXAMPLE_CONFIG": roff_example(open(config).read()),
    }
    text = open(template).read()
    unknown = set(re.findall(r"@([A-Za-z_]+)@", text)) - set(values)
    if unknown:
        sys.exit(f"{template}: unknown placeholders: {', '.join(sorted(unknown))}")
    text = re.sub(r"@([A-Za-z_]+)@", lambda m: values[m.group(1)], text)
    with open(output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
