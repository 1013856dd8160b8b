#!/bin/sh
# meson install script: installs the shipped configuration unless one is
# there already, so that an upgrade never overwrites an operator's edits.
# $1: the source file, $2: the directory (under DESTDIR).
set -eu
dir="${DESTDIR:-}$2"
mkdir -p "$dir"
if [ -e "$dir/mapsyncd.conf" ]; then
	echo "Keeping the existing $dir/mapsyncd.conf"
else
	install -m 0644 "$1" "$dir/mapsyncd.conf"
	echo "Installing $dir/mapsyncd.conf"
fi
