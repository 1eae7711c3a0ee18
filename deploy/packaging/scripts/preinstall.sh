#!/bin/sh
# Create the system user and group both services run as (no home, no
# shell, no password). Runs on every install and upgrade; does nothing
# when they exist.
set -e
if ! getent group tally >/dev/null; then
    groupadd --system tally
fi
if ! getent passwd tally >/dev/null; then
    useradd --system --gid tally --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "Tally agent and aggregator" tally
fi
exit 0
