"""mlebench-hpc: MLE-bench agents on Slurm + Apptainer, answers kept out of the agent's reach."""

__version__ = "0.1.0"
