#!/bin/sh
# Dovecot in the foreground; the first start puts dovecot.conf into the
# (empty) shared /etc/dovecot.
set -eu
[ -e /etc/dovecot/dovecot.conf ] || cp /usr/local/share/dovecot/dovecot.conf /etc/dovecot/dovecot.conf
install -d -o vmail -g vmail -m 0750 /var/mail/vhosts
exec dovecot -F
