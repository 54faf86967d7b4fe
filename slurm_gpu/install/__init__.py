"""Installing slurm-gpu on a node (``slurm-gpu node install``): what goes where (``layout``), and putting it
there idempotently or taking it away again (``apply``). The local test cluster installs its hooks with the
same code, so what Slurm runs there is what a site gets.
"""
