"""Make complete_seeds.json and pad_missing.json: upstream's experiments/aggregate_grading_reports.py
run on the grading_report.json of test_results.bats's demo sweep (kept with `KEEP` in its teardown,
or any report of that sweep), with `--split demo.txt`, without and with `--pad-missing`.

Each vector keeps the outcomes upstream read (per report in upstream's reading order: competition
and the six flags it uses), so the test can check that its own sweep produced the same, and
upstream's printed JSON. See ../README.md for the venv and the upstream checkout."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
FLAGS = (
    "competition_id",
    "gold_medal",
    "silver_medal",
    "bronze_medal",
    "above_median",
    "submission_exists",
    "valid_submission",
)


@click.command()
@click.option("--python", "python", required=True, help="the venv's python with upstream's numpy/scipy")
@click.option("--upstream", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--commit", required=True, help="upstream's commit the script comes from")
@click.option("--report", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
def main(python: str, upstream: Path, commit: str, report: Path) -> None:
    reports = json.loads(report.read_text())["competition_reports"]
    outcomes = [[r[k] for k in FLAGS] for r in sorted(reports, key=lambda r: str(r["competition_id"]))]
    for name, extra in (("complete_seeds", []), ("pad_missing", ["--pad-missing"])):
        args = ["--grading-reports", str(report), "--split", str(HERE / "demo.txt"), *extra]
        out = subprocess.run(
            [python, "experiments/aggregate_grading_reports.py", *args],
            cwd=upstream,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        printed = out.split("Average metrics across seeds:\n", 1)[1]
        vector = {
            "upstream_commit": commit,
            "command": " ".join(
                ["python experiments/aggregate_grading_reports.py --grading-reports grading_report.json"]
                + ["--split demo.txt", *extra]
            ),
            "outcomes": outcomes,
            "seed_lines": [line for line in out.splitlines() if line.startswith("Seed ")],
            "aggregate": json.loads(printed),
        }
        (HERE / f"{name}.json").write_text(json.dumps(vector, indent=1) + "\n")
        click.echo(f"wrote {HERE / name}.json")


if __name__ == "__main__":
    main()
