"""Images: the base mlebench-env, Docker archives, the Dockerfile translator for apptainer builds of
upstream-format agents, and reading a SIF file without running it."""
