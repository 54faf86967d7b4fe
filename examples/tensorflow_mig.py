"""What TensorFlow sees in this task: ``python tensorflow_mig.py 1g.10gb`` (the profile the job asked for).

Prints one JSON line and exits 0 when TensorFlow sees exactly one GPU of that profile, 1 otherwise, 2 on
a bad command line. Runs on real MIG hardware (for example in nvcr.io/nvidia/tensorflow images).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from migcheck import Device, report  # noqa: E402


def devices(tf):
    out = []
    for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        details = tf.config.experimental.get_device_details(gpu)
        tf.config.experimental.set_memory_growth(gpu, True)
        with tf.device(f"/GPU:{i}"):
            tf.constant(0.0)  # initialise the device so that its memory can be read
        info = tf.config.experimental.get_memory_info(f"GPU:{i}")
        total = int(details.get("memory_limit", 0) or info.get("limit", 0) or 0)
        out.append(Device(details.get("device_name", gpu.name), total))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="MIG profile the job asked for, e.g. 1g.10gb")
    args = parser.parse_args(argv)
    import tensorflow as tf

    return report("tensorflow", tf.__version__, devices(tf), args.profile)


if __name__ == "__main__":
    sys.exit(main())
