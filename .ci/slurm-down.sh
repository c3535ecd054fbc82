#!/usr/bin/env bash
# Stop the test SLURM started by .ci/slurm-up.sh (its jobs first), leaving the packages installed.
set -uo pipefail
command -v scancel >/dev/null && scancel --user="$(id -un)" 2>/dev/null
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
pidfile=/run/munge/munged.pid
[ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
sleep 1
echo "slurm-down: stopped"
exit 0
