#!/usr/bin/env bash
# Real-scheduler test of workflow/profiles/slurm: a one-node SLURM cluster on this machine runs
# the tiny config (tests/data/tiny.yaml) through `snakemake --profile workflow/profiles/slurm`;
# then the same config runs locally (--cores 2) and every product COG must be byte-identical.
#
# Needs root (installs the Debian packages slurm-wlm and munge when missing, writes
# /etc/munge/munge.key when missing, starts munged, slurmctld and slurmd) and a Python with
# snakemake, pandafine and snakemake-executor-plugin-slurm (pip install -e ".[slurm]").
#
#   sudo PANDAFINE_PYTHON=.venv/bin/python tests/slurm/run_slurm_test.sh [WORKDIR]
#
# WORKDIR (default: a new temporary directory) receives the cluster state and logs (cluster/),
# the SLURM run (slurm/) and the local run (local/). Exits non-zero on any failure and stops the
# daemons it started in every case. Environment: PANDAFINE_PYTHON (default: python3),
# PANDAFINE_SLURM_CORES (CPUs given to the node and to the local run; default: nproc, at most 2).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PANDAFINE_PYTHON:-python3}"
CONFIG="$REPO/tests/data/tiny.yaml"
WORK="${1:-$(mktemp -d /tmp/pandafine-slurm.XXXXXX)}"
CORES="${PANDAFINE_SLURM_CORES:-$(( $(nproc) < 2 ? $(nproc) : 2 ))}"
STATE="$WORK/cluster"
T0=$(date +%s)

say() { echo "[slurm-test $(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "[slurm-test] FAILED: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (installs and starts munge and SLURM daemons)"
"$PY" -c "import snakemake, pandafine" 2>/dev/null || fail "$PY cannot import snakemake and pandafine"
"$PY" -c "import snakemake_executor_plugin_slurm" 2>/dev/null \
    || fail "$PY lacks snakemake-executor-plugin-slurm: pip install -e \".[slurm]\""
PYBIN="$(dirname "$(readlink -f "$(command -v "$PY")" 2>/dev/null || command -v "$PY")")"

# ---- packages -------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$STATE/ctld" "$STATE/d" "$WORK/slurm" "$WORK/local"
cleanup() {
    local rc=$?
    say "stopping daemons"
    if [ -f "$STATE/slurmctld.pid" ]; then scancel --user=root >/dev/null 2>&1 || true; fi
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/pandafine-test-munged.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for _ in $(seq 20); do
        pgrep -F "$STATE/slurmctld.pid" >/dev/null 2>&1 || pgrep -F "$STATE/slurmd.pid" >/dev/null 2>&1 || break
        sleep 0.5
    done
    if [ -f "$STATE/slurm.conf.saved" ]; then mv "$STATE/slurm.conf.saved" /etc/slurm/slurm.conf;
    elif grep -q "^ClusterName=pandafine-test" /etc/slurm/slurm.conf 2>/dev/null; then rm -f /etc/slurm/slurm.conf; fi
    say "done (exit $rc); files in $WORK"
    exit $rc
}
trap cleanup EXIT

# ---- munge ----------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
MUNGE_SOCKET=/run/munge/munge.socket.2
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/pandafine-test-munged.pid --socket="$MUNGE_SOCKET" \
        --force
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || fail "munged does not answer"
fi

# ---- slurm.conf -----------------------------------------------------------------------------
HOST="$(hostname -s)"
MEM=$(( $(free -m | awk '/^Mem:/ {print $7}') * 9 / 10 ))     # 90 % of the available memory
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CTLD_PORT=$(free_port); D_PORT=$(free_port)
sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CORES|g" -e "s|@MEM@|$MEM|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@D_PORT@|$D_PORT|g" \
    "$REPO/tests/slurm/slurm.conf.in" > "$STATE/slurm.conf"
# srun inside a job reads the default path (the job environment does not carry SLURM_CONF):
# install the test config there, keeping a config that is not ours to put back at the end.
SYS_CONF=/etc/slurm/slurm.conf
mkdir -p /etc/slurm
if [ -e "$SYS_CONF" ] && ! grep -q "^ClusterName=pandafine-test" "$SYS_CONF"; then
    mv "$SYS_CONF" "$STATE/slurm.conf.saved"
fi
cp "$STATE/slurm.conf" "$SYS_CONF"
export SLURM_CONF="$SYS_CONF"
say "cluster: node $HOST, $CORES CPUs, ${MEM} MB, ports $CTLD_PORT/$D_PORT, conf $SLURM_CONF"

# ---- daemons --------------------------------------------------------------------------------
/usr/sbin/slurmctld -i
/usr/sbin/slurmd
for _ in $(seq 60); do
    state=$(sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null || true)
    [ "$state" = "idle" ] && break
    sleep 1
done
[ "$state" = "idle" ] || { tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2; fail "node $HOST is '$state', not idle"; }
say "node idle: $(sinfo -h -o '%P %a %D %T %c %m')"

# ---- the tiny workflow under SLURM ----------------------------------------------------------
# CPU-only node: no GPU request (PANDAFINE_SLURM_GPUS=0); jobs may not ask for more CPUs than
# the node has (--max-threads); a short first status-check delay keeps the test quick.
say "snakemake --profile workflow/profiles/slurm"
T1=$(date +%s)
(
    cd "$WORK"
    PANDAFINE_SLURM_GPUS=0 PATH="$PYBIN:$PATH" "$PY" -m snakemake -s "$REPO/Snakefile" \
        --profile "$REPO/workflow/profiles/slurm" --directory "$WORK/slurm" --configfile "$CONFIG" \
        --max-threads "$CORES" --slurm-init-seconds-before-status-checks 5
) > "$WORK/slurm.out" 2>&1 || { tail -60 "$WORK/slurm.out" >&2; fail "snakemake under SLURM failed (see $WORK/slurm.out)"; }
SLURM_S=$(( $(date +%s) - T1 ))
say "SLURM run finished in ${SLURM_S}s"

# ---- did the jobs run under SLURM? ----------------------------------------------------------
n_jobs=$(awk '$1 == "total" {print $2; exit}' "$WORK/slurm.out")
[ -n "$n_jobs" ] || fail "no job statistics in $WORK/slurm.out"
n_local=$(grep -c "^localrule " "$WORK/slurm.out" || true)   # rule all runs in the main process
n_remote=$(( n_jobs - n_local ))
squeue -h -t all -o '%i|%j|%T|%k' > "$WORK/squeue.txt"
n_done=$(awk -F'|' '$3 == "COMPLETED"' "$WORK/squeue.txt" | wc -l)
n_bad=$(awk -F'|' '$3 != "COMPLETED"' "$WORK/squeue.txt" | wc -l)
say "snakemake jobs: $n_jobs ($n_local local); SLURM jobs completed: $n_done, other states: $n_bad"
[ "$n_done" -eq "$n_remote" ] || { cat "$WORK/squeue.txt" >&2; fail "expected $n_remote COMPLETED SLURM jobs, got $n_done"; }
[ "$n_bad" -eq 0 ] || { cat "$WORK/squeue.txt" >&2; fail "SLURM jobs not COMPLETED"; }
n_logs=$(find "$WORK/slurm/.snakemake/slurm_logs" -name '*.log' | wc -l)
[ "$n_logs" -eq "$n_remote" ] || fail "expected $n_remote logs in .snakemake/slurm_logs, found $n_logs"
n_sub=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.out" || true)
[ "$n_sub" -eq "$n_remote" ] || fail "expected $n_remote submissions in $WORK/slurm.out, found $n_sub"
scontrol show job -o > "$WORK/scontrol.txt"
if grep -qi "gpu" "$WORK/scontrol.txt"; then fail "a job requested a GPU although PANDAFINE_SLURM_GPUS=0"; fi

# ---- the same config locally, and the products byte for byte --------------------------------
say "snakemake --cores $CORES (local)"
T2=$(date +%s)
PATH="$PYBIN:$PATH" "$PY" -m snakemake -s "$REPO/Snakefile" --directory "$WORK/local" \
    --configfile "$CONFIG" --cores "$CORES" > "$WORK/local.out" 2>&1 \
    || { tail -60 "$WORK/local.out" >&2; fail "local snakemake failed (see $WORK/local.out)"; }
LOCAL_S=$(( $(date +%s) - T2 ))
say "local run finished in ${LOCAL_S}s"

(cd "$WORK/slurm/results/panda_fine" && sha256sum -- *.tif) > "$WORK/slurm.sha256"
(cd "$WORK/local/results/panda_fine" && sha256sum -- *.tif) > "$WORK/local.sha256"
n_cogs=$(wc -l < "$WORK/slurm.sha256")
[ "$n_cogs" -ge 1 ] || fail "no COG in $WORK/slurm/results/panda_fine"
diff "$WORK/slurm.sha256" "$WORK/local.sha256" >&2 || fail "COGs differ between the SLURM and the local run"
say "OK: $n_cogs COGs byte-identical (SLURM ${SLURM_S}s, local ${LOCAL_S}s)"
