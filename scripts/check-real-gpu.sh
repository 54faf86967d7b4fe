#!/usr/bin/env bash
# Check slurm-gpu against a real MIG GPU, read-only, in under three minutes:
#   inventory, --check-catalog (NVML's profile and placement tables vs the catalog), the probe (every
#   read-only NVML answer MIG depends on, error codes included), NVML call latency, the real-driver
#   contract tests, and one JSON file of what was seen, to commit as a fixture.
# It never changes the GPU: no MIG mode change, no GPU or compute instance created or destroyed, no reset.
# Usage: scripts/check-real-gpu.sh [OUT.json]     (default: tests/fixtures/real-gpu/<host>-<date>.json)
# Exit: 0 checked and agreed, 1 a check found a difference or failed, 77 no NVIDIA GPU (nothing checked).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${1:-tests/fixtures/real-gpu/$(hostname -s)-$(date +%Y%m%d).json}
LIMIT=170   # seconds for the whole run

echo "check-real-gpu: read-only: it changes nothing (no MIG mode change, no instance created or destroyed)"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "check-real-gpu: no NVIDIA GPU: nvidia-smi is missing or lists no GPU; nothing was checked"
    exit 77
fi
if ! "$PY" -c "import pynvml" 2>/dev/null; then
    echo "check-real-gpu: pynvml (nvidia-ml-py) is not installed for $PY; run scripts/setup.sh first"
    exit 1
fi
deadline=$(( $(date +%s) + LIMIT ))
left() { local s=$(( deadline - $(date +%s) )); [ "$s" -gt 5 ] && echo "$s" || echo 5; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

echo "== inventory (NVML) with --check-catalog"
timeout "$(left)" "$PY" -m slurm_gpu inventory --driver nvml --check-catalog --json >"$work/inventory.json" \
    2>"$work/inventory.err" || { status=1; cat "$work/inventory.err"; }
"$PY" - "$work/inventory.json" <<'PYEOF' || status=1
import json, sys
doc = json.load(open(sys.argv[1]))
bad = 0
for g in doc.get("gpus", []):
    diffs = g.get("catalog_differences", [])
    print(f"GPU {g['index']}: {g['name']} -> {g.get('model') or 'NOT IN CATALOG'}; MIG current={g.get('mig_current')}; "
          f"{len(diffs)} catalog difference(s)")
    for d in diffs:
        print("   ", d)
    bad += len(diffs) + (g.get("model") is None)
sys.exit(1 if bad else 0)
PYEOF

echo "== probe (every read-only NVML answer about MIG) and NVML latency"
timeout "$(left)" "$PY" -m slurm_gpu inventory --driver nvml --probe --json >"$work/probe.json" \
    2>"$work/probe.err" || { status=1; cat "$work/probe.err"; }
timeout "$(left)" "$PY" - "$work/latency.json" <<'PYEOF' || status=1
import json, sys, time
t0 = time.perf_counter()
import pynvml  # noqa: F401
from slurm_gpu.devices.nvml import NvmlDriver
ms = {"import_ms": (time.perf_counter() - t0) * 1e3}
for round_ in ("first", "second"):  # a hook's whole read of the node, twice in one process
    d, t = NvmlDriver(), time.perf_counter()
    gpus = d.gpus()
    ms[f"{round_}_init_and_gpus_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    for g in gpus:
        d.read_profiles(g.index)
    ms[f"{round_}_profiles_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    d.instances()
    ms[f"{round_}_instances_ms"] = (time.perf_counter() - t) * 1e3
    d.close()
ms["gpus"] = len(gpus)
json.dump({k: round(v, 2) if isinstance(v, float) else v for k, v in ms.items()}, open(sys.argv[1], "w"))
print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in ms.items()))
PYEOF

echo "== nvidia-smi mig -lgip / -lgipp (read-only listings)"
timeout 20 nvidia-smi mig -lgip >"$work/lgip.txt" 2>&1 || true
timeout 20 nvidia-smi mig -lgipp >"$work/lgipp.txt" 2>&1 || true
timeout 20 nvidia-smi --query-gpu=index,name,pci.device_id,pci.sub_device_id,memory.total,driver_version,mig.mode.current \
    --format=csv,noheader >"$work/query.csv" 2>&1 || true
cat "$work/query.csv"

echo "== real-driver contract tests (marker gpu, read-only)"
timeout "$(left)" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/devices/test_devices_contract.py \
    >"$work/pytest.txt" 2>&1 || status=1
tail -3 "$work/pytest.txt"

mkdir -p "$(dirname "$OUT")"
"$PY" - "$work" "$OUT" "$status" <<'PYEOF'
import datetime, json, os, sys
work, out, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
def text(name):
    try:
        return open(os.path.join(work, name), encoding="utf-8", errors="replace").read()
    except OSError:
        return ""
def parse(name):
    try:
        return json.loads(text(name))
    except ValueError:
        return None
inventory = parse("inventory.json")
doc = {"schema": "slurm-gpu.real-gpu-check/v1", "taken": datetime.datetime.now().astimezone().isoformat(),
       "read_only": True, "agreed": status == 0, "nvidia_smi_query": text("query.csv").splitlines(),
       "inventory": inventory, "lgip": text("lgip.txt"), "lgipp": text("lgipp.txt"),
       "probe": parse("probe.json"), "nvml_latency": parse("latency.json"),
       "contract_tests": text("pytest.txt").splitlines()[-5:]}
with open(out, "w", encoding="utf-8") as fh:
    json.dump(doc, fh, indent=1)
    fh.write("\n")
print(f"check-real-gpu: wrote {out} (commit it as a fixture)")
PYEOF
[ "$status" -eq 0 ] && echo "check-real-gpu: the catalog and the contract agree with this GPU" \
    || echo "check-real-gpu: differences or failures above"
exit "$status"
