"""Slurm seen from the helpers: queries (scontrol, squeue, sacct) and the sbatch options."""
