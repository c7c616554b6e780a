#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, run as root without systemd: for dlrun's SLURM tests
# and for trying `hydra/launcher=slurm` on a laptop. Debian's slurmctld, slurmd, slurm-client and
# munge (SLURM 22.05) are installed when missing; the state, spool and logs live in STATE_DIR.
#
#   sudo bash tools/slurm_cluster.sh start [STATE_DIR]   # then `sinfo` shows the node idle
#   sudo bash tools/slurm_cluster.sh stop [STATE_DIR]
#
# It writes /etc/slurm/slurm.conf only when there is none or it is one of these; a cluster that
# already answers `sinfo` is left as it is.
set -euo pipefail

action=${1:-start}
state=${2:-/tmp/dlrun-slurm}
conf=/etc/slurm/slurm.conf
marker="# written by dlrun's tools/slurm_cluster.sh"

say() { echo "slurm_cluster: $*" >&2; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
}

start_munge() {
    pgrep -x munged >/dev/null && return
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        head -c 1024 /dev/urandom > /etc/munge/munge.key
    fi
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
    chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged
}

write_conf() {
    if [ -f "$conf" ] && ! grep -q "$marker" "$conf"; then
        say "$conf exists and is not this script's: start its daemons yourself, or move it away"
        exit 1
    fi
    local host cpus memory
    host=$(hostname -s)
    cpus=$(nproc --all)  # all of them: a caller pinned to one core (a test worker) sees one
    memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p /etc/slurm "$state/state" "$state/spool" "$state/log"
    cat > "$conf" <<EOF
$marker
ClusterName=dlrun
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
InactiveLimit=0
JobRequeue=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
}

# a controller that runs answers at once; with none, sinfo retries for 9 s before it says so
answers() { timeout 3 sinfo -h -o "%T" 2>/dev/null; }

wait_idle() {
    for _ in $(seq 60); do
        if answers | grep -qE "^(idle|mixed|allocated)"; then
            return
        fi
        sleep 1
    done
    say "the node did not come up within a minute; see $state/log/"
    exit 1
}

case "$action" in
    start)
        if answers | grep -qE "^(idle|mixed|allocated)"; then
            say "a cluster already answers: using it"
            exit 0
        fi
        install_packages
        start_munge
        write_conf
        # on every core, whatever this shell's caller was pinned to (the jobs inherit slurmd's)
        all_cores="0-$(( $(nproc --all) - 1 ))"
        taskset -c "$all_cores" slurmctld
        taskset -c "$all_cores" slurmd
        wait_idle
        say "up: $(sinfo -h -o '%P %D %T %c CPUs')"
        ;;
    stop)
        for pidfile in "$state/slurmd.pid" "$state/slurmctld.pid"; do
            [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
        done
        ;;
    *)
        echo "usage: $0 start|stop [STATE_DIR]" >&2
        exit 2
        ;;
esac
