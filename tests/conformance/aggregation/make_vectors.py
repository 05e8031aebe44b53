"""Run upstream's experiments/aggregate_grading_reports.py on every case of aggregation_cases.py and
keep what it printed as vectors/<case>.json (README.md: how, with which commit and pins).

usage: .venv/bin/python tests/conformance/aggregation/make_vectors.py --python UPSTREAM_VENV/bin/python \
           --upstream UPSTREAM_TREE --commit SHA"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from aggregation_cases import cases, write_case  # noqa: E402

SCRIPT = Path("experiments") / "aggregate_grading_reports.py"
ROOT = "<case dir>"


def run_upstream(python: str, script: Path, args: list[str], cwd: Path) -> dict[str, object]:
    done = subprocess.run([python, str(script), *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1]
        m = re.match(r"^(\w+): (.*)$", last)
        if not m:
            raise SystemExit(f"upstream's script failed unexpectedly: {last}")
        return {"refusal": {"type": m[1], "message": m[2]}}
    out = done.stdout
    head, _, tail = out.partition("------\nAverage metrics across seeds:\n")
    return {"seed_lines": head.splitlines(), "aggregate": json.loads(tail), "printed_json": tail}


@click.command()
@click.option("--python", "python", required=True, help="The venv python with upstream's numpy and scipy.")
@click.option("--upstream", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--commit", required=True)
def main(python: str, upstream: Path, commit: str) -> None:
    versions = subprocess.run(
        [
            python,
            "-c",
            "import sys, numpy, scipy; print(sys.version.split()[0], numpy.__version__, scipy.__version__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out_dir = HERE / "vectors"
    out_dir.mkdir(exist_ok=True)
    for case in cases():
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sums = write_case(case, root)
            args = case.args(root)
            result = run_upstream(python, upstream / SCRIPT, args, root)
        vector = {
            "case": case.name,
            "args": [a.replace(str(root), ROOT) for a in args],
            "inputs_sha256": sums,
            "upstream": result,
            "generated_with": {
                "upstream_commit": commit,
                "python": versions[0],
                "numpy": versions[1],
                "scipy": versions[2],
            },
        }
        (out_dir / f"{case.name}.json").write_text(json.dumps(vector, indent=1) + "\n")
        click.echo(f"{case.name}: {'refused' if 'refusal' in result else 'ok'}")


if __name__ == "__main__":
    main()
