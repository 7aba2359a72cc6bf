#!/usr/bin/env bash
# Real-scheduler test of workflow/profiles/slurm: a one-node SLURM cluster on this machine runs
# the tiny config (tests/data/tiny.yaml) inferred in blocks (grid.block 64: 2 x 2 blocks, so 4
# infer jobs a year, which the profile groups into one sbatch submission a year) through
# `snakemake --profile workflow/profiles/slurm`; then the same blocked config runs locally
# (--cores as the node has, no groups) and every product COG must be byte-identical. Locally the jobs
# that run a model take at most half of the cores (model_threads in workflow/rules/common.smk), under
# SLURM what they declare up to --max-threads: the SLURM run gets --max-threads half the node's CPUs,
# so that both runs train with the same number of threads (training is deterministic for a given
# thread count only).
#
# Needs root (installs the Debian packages slurm-wlm and munge when missing, writes
# /etc/munge/munge.key when missing, starts munged, slurmctld and slurmd) and a Python with
# snakemake, pandafine and snakemake-executor-plugin-slurm (pip install -e ".[slurm]").
#
#   sudo PANDAFINE_PYTHON=.venv/bin/python tests/slurm/run_slurm_test.sh [WORKDIR]
#
# WORKDIR (default: a new temporary directory) receives the blocked config (tiny_blocked.yaml),
# the cluster state and logs (cluster/), the SLURM run (slurm/) and the local run (local/).
# Exits non-zero on any failure and stops the daemons it started in every case. Environment:
# PANDAFINE_PYTHON (default: python3), PANDAFINE_SLURM_CORES (CPUs given to the node and to the
# local run; default: nproc, at most 2).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PANDAFINE_PYTHON:-python3}"
BLOCK=64    # grid.block and product.blocksize (which must divide grid.block) of the blocked config
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

# ---- the config: tiny.yaml inferred in blocks -----------------------------------------------
CONFIG="$WORK/tiny_blocked.yaml"
"$PY" - "$REPO/tests/data/tiny.yaml" "$CONFIG" "$BLOCK" <<'PYEOF' || fail "cannot write $CONFIG"
import sys

import yaml

src, dst, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src) as f:
    cfg = yaml.safe_load(f)
cfg["grid"]["block"] = block
cfg["product"]["blocksize"] = block
with open(dst, "w") as f:
    yaml.safe_dump(cfg, f, sort_keys=False)
PYEOF
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
# CPU-only node: no GPU request (PANDAFINE_SLURM_GPUS=0); jobs ask for at most half the node's CPUs
# (--max-threads: the threads a model job gets in the local run below); a short first status-check
# delay keeps the test quick.
MAX_THREADS=$(( CORES / 2 > 1 ? CORES / 2 : 1 ))
say "snakemake --profile workflow/profiles/slurm"
T1=$(date +%s)
(
    cd "$WORK"
    PANDAFINE_SLURM_GPUS=0 PATH="$PYBIN:$PATH" "$PY" -m snakemake -s "$REPO/Snakefile" \
        --profile "$REPO/workflow/profiles/slurm" --directory "$WORK/slurm" --configfile "$CONFIG" \
        --max-threads "$MAX_THREADS" --slurm-init-seconds-before-status-checks 5
) > "$WORK/slurm.out" 2>&1 || { tail -60 "$WORK/slurm.out" >&2; fail "snakemake under SLURM failed (see $WORK/slurm.out)"; }
SLURM_S=$(( $(date +%s) - T1 ))
say "SLURM run finished in ${SLURM_S}s"

# ---- did the jobs run under SLURM, the infer jobs in groups? --------------------------------
# Every snakemake job but the local rule `all` ran under SLURM; the infer jobs ran in group jobs
# (the profile's groups/group-components), a group being one sbatch submission and one log.
n_jobs=$(awk '$1 == "total" {print $2; exit}' "$WORK/slurm.out")
[ -n "$n_jobs" ] || fail "no job statistics in $WORK/slurm.out"
n_infer=$(awk '$1 == "infer" && $2 ~ /^[0-9]+$/ {print $2; exit}' "$WORK/slurm.out")
[ -n "$n_infer" ] || fail "no infer jobs in the job statistics of $WORK/slurm.out"
n_local=$(grep -c "^localrule " "$WORK/slurm.out" || true)   # rule all runs in the main process
n_groups=$(grep -c "Group job infer_" "$WORK/slurm.out" || true)
n_remote=$(( n_jobs - n_local ))                  # snakemake jobs run under SLURM
n_expected=$(( n_remote - n_infer + n_groups ))   # SLURM jobs: one a group, one each other job
squeue -h -t all -o '%i|%j|%T|%k' > "$WORK/squeue.txt"
n_done=$(awk -F'|' '$3 == "COMPLETED"' "$WORK/squeue.txt" | wc -l)
n_bad=$(awk -F'|' '$3 != "COMPLETED"' "$WORK/squeue.txt" | wc -l)
say "snakemake jobs: $n_jobs ($n_local local, $n_infer infer in $n_groups groups); SLURM jobs completed: $n_done, other states: $n_bad"
[ "$n_groups" -ge 1 ] && [ "$n_groups" -lt "$n_infer" ] \
    || fail "expected the $n_infer infer jobs in fewer group jobs, found $n_groups groups"
[ "$n_done" -eq "$n_expected" ] || { cat "$WORK/squeue.txt" >&2; fail "expected $n_expected COMPLETED SLURM jobs, got $n_done"; }
[ "$n_bad" -eq 0 ] || { cat "$WORK/squeue.txt" >&2; fail "SLURM jobs not COMPLETED"; }
n_logs=$(find "$WORK/slurm/.snakemake/slurm_logs" -name '*.log' | wc -l)
[ "$n_logs" -eq "$n_expected" ] || fail "expected $n_expected logs in .snakemake/slurm_logs, found $n_logs"
n_group_logs=$(find "$WORK/slurm/.snakemake/slurm_logs" -path '*/group_infer_*' -name '*.log' | wc -l)
[ "$n_group_logs" -eq "$n_groups" ] || fail "expected $n_groups group logs in .snakemake/slurm_logs, found $n_group_logs"
n_sub=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.out" || true)
[ "$n_sub" -eq "$n_expected" ] || fail "expected $n_expected submissions in $WORK/slurm.out, found $n_sub"
scontrol show job -o > "$WORK/scontrol.txt"
if grep -qi "gpu" "$WORK/scontrol.txt"; then fail "a job requested a GPU although PANDAFINE_SLURM_GPUS=0"; fi
# What each group asked SLURM for. Its blocks run one after another (the profile's group_slot):
# the CPUs and memory of one block, and the sum of the blocks' runtimes.
"$PY" - "$WORK/slurm.out" "$WORK/scontrol.txt" <<'PYEOF' || fail "a group job requested other resources than its jobs need"
import re
import sys
from collections import defaultdict

out, scontrol = (open(path).read().splitlines() for path in sys.argv[1:])
members = defaultdict(list)   # groupid -> resources of its jobs, as the main snakemake printed them
group = None
for line in out:
    m = re.search(r"Group job (\S+) \(jobs", line)
    if m:
        group = m.group(1)
    elif re.match(r"(\[[^]]*\]\s*)?(rule|localrule|checkpoint) ", line):
        group = None          # an ungrouped job's header ends the group's listing
    elif group and re.match(r" {8}resources: ", line):
        members[group].append(dict(kv.split("=", 1) for kv in line.split(": ", 1)[1].split(", ")))


def minutes(limit):           # [D-]HH:MM:SS
    days, _, hms = limit.rpartition("-")
    h, m, s = map(int, hms.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def mb(mem):
    return int(float(mem[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[mem[-1]])


jobs = defaultdict(list)      # groupid -> (minutes, CPUs per task, MB) of its SLURM jobs
for line in scontrol:
    field = {k: re.search(rf"(?:^|\s){re.escape(k)}=(\S+)", line) for k in
             ("Comment", "TimeLimit", "CPUs/Task", "MinMemoryNode")}
    m = field["Comment"] and re.fullmatch(r"rule_(\S+)_infer", field["Comment"].group(1))
    if m:
        jobs[m.group(1)].append((minutes(field["TimeLimit"].group(1)), int(field["CPUs/Task"].group(1)),
                                 mb(field["MinMemoryNode"].group(1))))
ok = bool(members) and set(members) == set(jobs)
for g, res in sorted(members.items()):
    runtime = sum(int(r["runtime"]) for r in res)
    cpus = max(int(r["cpus_per_task"]) for r in res)
    mem = max(int(r["mem_mb"]) for r in res)
    got = jobs.get(g, [])
    print(f"[slurm-test] group {g}: {len(res)} infer jobs in {len(got)} SLURM job(s) requesting (min, CPUs, MB) "
          f"{got}; expected {runtime} min in all, {cpus} CPUs, {mem} MB")
    ok &= bool(got) and sum(t for t, _, _ in got) == runtime and all((c, m) == (cpus, mem) for _, c, m in got)
if set(members) != set(jobs):
    print(f"[slurm-test] groups in the snakemake log {sorted(members)}, in scontrol {sorted(jobs)}")
sys.exit(0 if ok else 1)
PYEOF

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
say "OK: $n_cogs COGs byte-identical (SLURM ${SLURM_S}s, $n_infer infer jobs in $n_groups submissions; local ${LOCAL_S}s)"
