#!/usr/bin/env bash
# The main job on its embedded default: sets up, starts a local Slurm cluster (real slurmctld and two
# slurmd, each node with four simulated H100-80GB GPUs), submits a mix of MIG jobs as two users, shows
# what every job saw and what the nodes did, checks that each job got exactly what it asked for (PASS or
# FAIL per job, exit 1 on a failure), then stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

DIR=${SLURM_GPU_DEMO_DIR:-/var/tmp/slurm-gpu-demo}
PORT_BASE=${SLURM_GPU_DEMO_PORT_BASE:-17400}
SG="$PWD/.venv/bin/slurm-gpu"

# The configuration `slurm-gpu config` ships: count admission (each node publishes migp:<profile>:<n>,
# re-planned by a `slurm-gpu publish --watch` per node) and Slurm's default scheduler settings.
"$SG" cluster up --nodes 2 --gpus H100-80GB:4 --dir "$DIR" --port-base "$PORT_BASE"
trap '"$SG" cluster down --dir "$DIR" >/dev/null' EXIT
export SLURM_CONF="$DIR/etc/slurm.conf"
OUT="$DIR/demo-output"
rm -rf "$OUT" && mkdir -p "$OUT" && chmod 1777 "$OUT"
EXPECTED="$DIR/demo-expected.tsv"
: >"$EXPECTED"

# Each job prints what it was given; `srun` runs one line per task.
JOB='echo "job $SLURM_JOB_ID on $SLURMD_NODENAME: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES";
     srun -l bash -c "echo task \$SLURM_PROCID on \$SLURMD_NODENAME: \$CUDA_VISIBLE_DEVICES all=\$SLURM_GPU_MIG_DEVICES"
     sleep 25'

ids=()
declare -A what
submit() {  # user, profile it must get, instances per node, tasks, sbatch options...
    local user=$1 profile=$2 count=$3 tasks=$4 id; shift 4
    id=$(runuser -u "$user" -- sbatch --parsable -o "$OUT/%j.out" "$@" --wrap "$JOB")
    ids+=("$id"); what[$id]="$user: sbatch $*"
    printf '%s\t%s\t%s\t%s\t%s\n' "$id" "$profile" "$count" "$tasks" "${what[$id]}" >>"$EXPECTED"
    echo "   job $id  ${what[$id]}"
}

echo "== submitting"
submit sgtest1 1g.10gb 1 2 --gres=gpu:1g.10gb -n 2
submit sgtest2 3g.40gb 2 2 --gres=gpu:3g.40gb:2 -n 2
submit sgtest1 1g.20gb 1 1 --gres=gpu:20gb
submit sgtest2 2g.20gb 1 2 --gres=gpu:2g.20gb -N 2
submit sgtest1 7g.80gb 1 1 --gres=gpu:1
for i in 1 2 3 4 5 6; do submit sgtest2 4g.40gb 1 1 --gres=gpu:4g.40gb; done
echo "== an unknown profile is refused at submit time"
runuser -u sgtest1 -- sbatch --gres=gpu:5g.50gb --wrap true || true

node_status() {  # node, status options...
    local node=$1; shift
    SLURMD_NODENAME=$node SLURM_GPU_CONFIG="$DIR/config.yaml" "$SG" status "$@"
}
# Prologs on a node take the node lock in turn: wait until most jobs run and every running job has its
# journal record.
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
    echo "-- $node: its target layout (migp:<profile>:<count> published, of which allocated)"
    detail=$(scontrol show node -d "$node" | tr ' ' '\n')
    used=$(sed -n 's/^GresUsed=//p' <<<"$detail" | tr ',' '\n')
    sed -n 's/^Gres=//p' <<<"$detail" | tr ',' '\n' | awk -F: -v used="$used" '
        BEGIN { n = split(used, u, "\n"); for (i = 1; i <= n; i++) { split(u[i], f, ":"); sub(/\(.*/, "", f[3]); a[f[2]] = f[3] } }
        $1 == "migp" && $2 != "unused" && $3 + 0 > 0 { printf "   %-12s %s promised, %s allocated\n", $2, $3, a[$2] + 0 }' 
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

echo "== the verdict"
"$PWD/.venv/bin/python" -m slurm_gpu.testbed.demo "$DIR" "$EXPECTED" "$OUT"
