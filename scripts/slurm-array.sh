#!/usr/bin/env bash
# A verify job as a Slurm job array on a one-node cluster started here (docs/scale.md):
# `replay shard` as array tasks 0..N-1, then `replay reduce`, checked against one process.
#
#   apt-get install slurm-wlm munge      # Debian 12: Slurm 22.05
#   bash scripts/slurm-array.sh STORE [TASKS]
#
# Needs root (slurmd runs the tasks as the submitting user). Starts munged, slurmctld and slurmd
# with a throwaway configuration under target/slurm, and stops them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
store=$(realpath "$1")
tasks=${2:-4}
replay=$(realpath target/release/replay)
dir=$(realpath -m target/slurm)
rm -rf "$dir" && mkdir -p "$dir/state" "$dir/spool" /run/munge
host=$(hostname)
cpus=$(nproc)
export SLURM_CONF="$dir/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=epk
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
munged --force 2>/dev/null || true
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
stop() {
  scancel --quiet --user root 2>/dev/null || true
  kill "$(cat "$dir/slurmd.pid")" "$(cat "$dir/slurmctld.pid")" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 50); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed"; then break; fi
  sleep 0.2
done
sinfo
rm -rf "$store/partials/slurm"
started=$(date +%s.%N)
sbatch --wait --array="0-$((tasks - 1))" --cpus-per-task=1 --output="$dir/task-%a.log" \
  --wrap "$replay shard $store --count $tasks --job slurm --threads 1 --quiet"
cat "$dir"/task-*.log | grep '^tile'
echo "array of $tasks tasks: $(echo "$(date +%s.%N) - $started" | bc) s"
"$replay" reduce "$store" --job slurm --json > "$dir/reduce.json"
"$replay" verify "$store" --json > "$dir/verify.json"
python3 - "$dir/reduce.json" "$dir/verify.json" <<'PY'
import json, sys
joined, whole = (json.load(open(p)) for p in sys.argv[1:])
assert joined["passed"] and whole["passed"]
gap = abs(joined["max_abs_error"] - whole["max_abs_error"])
for key in ("steps", "points", "total_evals", "max_certificate", "worst_step"):
    assert joined[key] == whole[key], key
print(f"reduce: PASS, machine error {joined['max_abs_error']:.3e} "
      f"(one process {whole['max_abs_error']:.3e}, gap {gap:.1e})")
assert gap <= 1e-14
PY
