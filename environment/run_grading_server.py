"""Grading server entry point, upstream-style:

    python environment/run_grading_server.py --competition-id C --data-dir D --host H --port P [--url-file F]

A thin wrapper over `mlebench-hpc serve` (mlebench_hpc.server.main.serve_cmd), usable from a checkout
(with or without the package installed) and inside the grading image.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from mlebench_hpc.server.main import serve_cmd
except ImportError:  # a checkout whose package is not installed: use helpers/ next to this file
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "helpers"))
    from mlebench_hpc.server.main import serve_cmd

if __name__ == "__main__":
    serve_cmd(prog_name="run_grading_server.py")
