"""Agents in upstream MLE-bench's format: the registry of variants (AGENTS_DIR/<name>/config.yaml)
and `mlebench-hpc agent`."""
