#!/usr/bin/env bash
# The main job on its embedded default: sets up, starts a local Slurm cluster (real slurmctld and two
# slurmd, each node with four simulated H100-80GB GPUs), submits a mix of MIG jobs as two users, shows
# what every job saw and what the nodes did, then stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

DIR=${SLURM_GPU_DEMO_DIR:-/var/tmp/slurm-gpu-demo}
PORT_BASE=${SLURM_GPU_DEMO_PORT_BASE:-17400}
SG="$PWD/.venv/bin/slurm-gpu"

# --scheduler shipped: the SchedulerParameters `slurm-gpu config slurm` generates (one start per pass).
"$SG" cluster up --nodes 2 --gpus H100-80GB:4 --dir "$DIR" --port-base "$PORT_BASE" --scheduler shipped
trap '"$SG" cluster down --dir "$DIR" >/dev/null' EXIT
export SLURM_CONF="$DIR/etc/slurm.conf"
OUT="$DIR/demo-output"
mkdir -p "$OUT" && chmod 1777 "$OUT"

# Each job prints what it was given; `srun` runs one line per task.
JOB='echo "job $SLURM_JOB_ID on $SLURMD_NODENAME: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES";
     srun -l bash -c "echo task \$SLURM_LOCALID: \$CUDA_VISIBLE_DEVICES"; sleep 25'

ids=()
declare -A what
submit() {  # user, sbatch options...
    local user=$1 id; shift
    id=$(runuser -u "$user" -- sbatch --parsable -o "$OUT/%j.out" "$@" --wrap "$JOB")
    ids+=("$id"); what[$id]="$user: sbatch $*"
    echo "   job $id  ${what[$id]}"
}

echo "== submitting"
submit sgtest1 --gres=gpu:1g.10gb -n 2
submit sgtest2 --gres=gpu:3g.40gb:2
submit sgtest1 --gres=gpu:20gb
submit sgtest2 --gres=gpu:2g.20gb -N 2
submit sgtest1 --gres=gpu:1
for i in 1 2 3 4 5 6; do submit sgtest2 --gres=gpu:4g.40gb; done
echo "== an unknown profile is refused at submit time"
runuser -u sgtest1 -- sbatch --gres=gpu:5g.50gb --wrap true || true

node_status() {  # node, status options...
    local node=$1; shift
    SLURMD_NODENAME=$node SLURM_GPU_CONFIG="$DIR/config.yaml" "$SG" status "$@"
}
# One job starts per scheduling pass and prologs on a node take the node lock in turn: wait until most
# jobs run and every running job has its journal record.
for _ in $(seq 90); do
    pending=0
    [ "$(squeue -h -t RUNNING -o %i | wc -l)" -ge 8 ] || [ -z "$(squeue -h -t PENDING -o %i)" ] || pending=1
    for node in $(sinfo -h -N -o '%N' | sort -u); do
        running=$(squeue -h -t RUNNING -w "$node" -o %i | wc -l)
        recorded=$(node_status "$node" --json | "$PWD/.venv/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))')
        [ "$recorded" -ge "$running" ] || pending=1
    done
    [ "$pending" -eq 0 ] && break
    sleep 1
done
echo "== while the first jobs run"
squeue -o '%.10i %.8u %.8T %.20R %.30b'
for node in $(sinfo -h -N -o '%N' | sort -u); do
    echo "-- $node: what still fits (active features mig.<profile>.<k>, largest k shown)"
    scontrol show node "$node" | tr ' ' '\n' | sed -n 's/^ActiveFeatures=//p' | tr ',' '\n' \
        | awk '/^mig\./ { t = $0; sub(/^mig\./, "", t); k = t; sub(/\.[0-9]+$/, "", t); sub(/.*\./, "", k);
                         if (k + 0 > m[t]) m[t] = k + 0 }
               END { n = 0; for (t in m) { printf "   %s x%d\n", t, m[t]; n++ } if (!n) print "   nothing" }' | sort
    node_status "$node" | sed 's/^/   /'
done

echo "== waiting for every job to end"
while [ -n "$(squeue -h -o %i)" ]; do sleep 2; done

echo "== what each job saw"
for id in "${ids[@]}"; do
    echo "-- job $id (${what[$id]})"
    sed 's/^/   /' "$OUT/$id.out" 2>/dev/null || echo "   (no output)"
done

echo "== after the jobs: no instance left, no node drained"
for node in $(sinfo -h -N -o '%N' | sort -u); do
    SLURMD_NODENAME=$node SLURM_GPU_CONFIG="$DIR/config.yaml" "$SG" inventory | sed 's/^/   /'
done
sinfo -N -o '%N %T %E'
