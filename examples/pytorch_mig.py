"""What PyTorch sees in this task: ``python pytorch_mig.py 1g.10gb`` (the profile the job asked for).

Prints one JSON line (devices, the variables, the job) and exits 0 when PyTorch sees exactly one CUDA
device of that profile, 1 when it sees another, 2 on a bad command line. With ``--compute`` it also runs
a small matrix product on the device. Runs on real MIG hardware; on a machine without a GPU (the CPU build
of PyTorch) it reports no device and exits 1.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migcheck import Device, report  # noqa: E402


def devices(torch):
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(Device(props.name, int(props.total_memory)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="MIG profile the job asked for, e.g. 1g.10gb")
    parser.add_argument("--compute", action="store_true", help="also multiply two matrices on the device")
    args = parser.parse_args(argv)
    import torch

    seen = devices(torch)
    code = report("pytorch", torch.__version__, seen, args.profile)
    if code == 0 and args.compute:
        x = torch.randn(1024, 1024, device="cuda")
        print(f"matmul ok: {float((x @ x).sum()):.1f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
