#!/usr/bin/env bash
# A real one-node SLURM for tests/test_slurm.py, on a Debian/Ubuntu machine without systemd.
# Run as root: installs slurm-wlm + munge (once), writes /etc/slurm/slurm.conf, starts munged,
# slurmctld and slurmd, and waits until the node is idle. Idempotent: a second run returns at
# once if the node already answers. Stop everything with .ci/slurm-down.sh.
# No accounting (sacct does not work): the profile's status checks use squeue then.
set -euo pipefail
PARTITION=${SLURM_TEST_PARTITION:-debug}
[ "$(id -u)" = 0 ] || { echo "slurm-up.sh: run as root" >&2; exit 1; }

if command -v sinfo >/dev/null && timeout 5 sinfo -h -o %t 2>/dev/null | grep -qx idle; then
    echo "slurm-up: already running"; exit 0
fi

# 1. Packages (skipped when already installed).
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# 2. Config: one node with this machine's CPUs and ~90% of its memory, one default partition.
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge
cat >/etc/slurm/slurm.conf <<EOF
# Written by fedsafe .ci/slurm-up.sh: single-node test cluster, no accounting.
ClusterName=fedsafe
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# 3. Daemons (no systemd here): munged as the munge user, then controller and node daemon.
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

# 4. Wait for the node to be idle (about 5-15 s).
for _ in $(seq 60); do
    state=$(sinfo -h -o %t 2>/dev/null || true)
    if [ "$state" = idle ]; then echo "slurm-up: node ${HOST} idle in partition ${PARTITION}"; exit 0; fi
    # a node left down/drained by an earlier run: bring it back
    case "$state" in down*|drain*|drng*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true;; esac
    sleep 1
done
echo "slurm-up: node not idle after 60 s (state: ${state:-no answer}); see /var/log/slurm/" >&2
exit 1
