"""Sweeps of (agent, competition, seed) pairs: planning, status, attempts, stale runs, cost so far."""
