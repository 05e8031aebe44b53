"""The LLM endpoint of agents that use one: readiness, per-run keys, the proxy before the backend."""
