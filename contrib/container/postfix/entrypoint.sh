#!/bin/sh
# Postfix in the foreground; the first start puts main.cf and master.cf
# into the (empty) shared /etc/postfix. Until mapsyncd has written the
# maps, Postfix answers "451 temporary lookup failure": mail is retried.
set -eu
[ -e /etc/postfix/main.cf ] || cp /etc/postfix-meta/main.cf.mailnet /etc/postfix/main.cf
[ -e /etc/postfix/master.cf ] || cp /etc/postfix-meta/master.cf /etc/postfix/master.cf
install -d -o vmail -g vmail -m 0750 /var/mail/vhosts
exec postfix start-fg
