#!/bin/sh
# Tell systemd about the units. The services are not enabled or started:
# they need secrets and certificates first (docs/operations.md,
# "Installing from a package").
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # On upgrade, restart what was running so the new binary takes over.
    for unit in tally-agent tally-aggregator; do
        if systemctl is-active --quiet "$unit"; then
            systemctl try-restart "$unit" >/dev/null 2>&1 || true
        fi
    done
fi
exit 0
