#!/bin/sh
# Stop the services before their files go, on removal only (deb: "remove",
# rpm: 0 packages left); an upgrade keeps them running until postinstall
# restarts them.
set -e
case "$1" in
    remove|0)
        if [ -d /run/systemd/system ]; then
            systemctl stop tally-agent tally-aggregator >/dev/null 2>&1 || true
            systemctl disable tally-agent tally-aggregator >/dev/null 2>&1 || true
        fi
        ;;
esac
exit 0
