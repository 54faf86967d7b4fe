#!/bin/sh
#SBATCH --gres=gpu:3g.40gb
#SBATCH --output=tensorflow-mig-%j.out
# Image: NGC TensorFlow through rootless podman (docs/containers.md, "NGC images").
IMAGE=${IMAGE:-nvcr.io/nvidia/tensorflow:24.08-tf2-py3}
srun slurm-gpu container podman run --network none "$IMAGE" -- python "$PWD/examples/tensorflow_mig.py" 3g.40gb
