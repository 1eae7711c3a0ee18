#!/bin/sh
# deb purge: remove the state (spool, journal, WAL: only after every agent
# has delivered and every node has written InfluxDB), the logs and the
# system user. A plain remove, an upgrade and rpm erase keep all three.
set -e
case "$1" in
    purge)
        rm -rf /var/lib/tally-agent /var/lib/tally-aggregator /var/log/tally-agent /var/log/tally-aggregator
        rmdir /etc/tally/tls /etc/tally 2>/dev/null || true
        if getent passwd tally >/dev/null; then
            userdel tally >/dev/null 2>&1 || true
        fi
        if getent group tally >/dev/null; then
            groupdel tally >/dev/null 2>&1 || true
        fi
        ;;
esac
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
