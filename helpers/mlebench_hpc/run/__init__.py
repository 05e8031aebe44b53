"""One agent run: its record (metadata.json) and its one writer, the phases the agent job calls,
finding and waiting for its grading server, its overlays, its copy of /home/agent, and its cost."""
