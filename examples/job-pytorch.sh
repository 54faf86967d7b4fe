#!/bin/sh
# One task per instance, each in its own container on its own instance (CUDA: one MIG device per process).
#SBATCH --gres=gpu:1g.10gb:2
#SBATCH --ntasks=2
#SBATCH --output=pytorch-mig-%j.out
# Image: an NGC PyTorch SIF pulled once into the site cache (docs/containers.md, "NGC images").
IMAGE=${IMAGE:-/shared/sif/pytorch_24.08.sif}
srun slurm-gpu container apptainer exec "$IMAGE" -- python "$PWD/examples/pytorch_mig.py" 1g.10gb --compute
