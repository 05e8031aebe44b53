"""Our aggregation against upstream's experiments/aggregate_grading_reports.py on the same reports:
every vector's figures equal, float for float; its refusals are ours; our `aggregate --json` prints
what upstream printed, byte for byte. The reports are rebuilt here and checked against the sha256 of
the ones upstream read (README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aggregation_cases import Case, cases, write_case
from click.testing import CliRunner
from mlebench_hpc.competition_sets import read_competition_list
from mlebench_hpc.results.aggregate_cli import aggregate_cmd
from mlebench_hpc.results.aggregation import AggregationError, aggregate, runs_of_files

VECTORS = Path(__file__).resolve().parent / "vectors"
CASES = {c.name: c for c in cases()}


def test_every_case_has_its_vector_and_no_other() -> None:
    assert sorted(p.stem for p in VECTORS.glob("*.json")) == sorted(CASES)
    kinds = {n: "refusal" in json.loads((VECTORS / f"{n}.json").read_text())["upstream"] for n in CASES}
    assert 4 <= sum(kinds.values()) < len(kinds)  # refusals and figures both checked


def _inputs(case: Case, vector: dict, root: Path) -> tuple[list[str], list[str]]:
    assert write_case(case, root) == vector["inputs_sha256"], "the reports differ from those upstream read"
    args = [a.replace("<case dir>", str(root)) for a in vector["args"]]
    assert args == case.args(root)
    reports = args[1 : args.index("--split")]
    split = (
        case.split_ids()
        if isinstance(case.split, str)
        else read_competition_list(root / f"{case.name}.txt")[0]
    )
    return reports, split


def _seed_line(i: int, metrics: dict) -> str:
    return f"Seed {i + 1}: SeedMetrics({', '.join(f'{k}={v!r}' for k, v in metrics.items())})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_our_aggregation_equals_upstreams(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    vector = json.loads((VECTORS / f"{name}.json").read_text())
    reports, split = _inputs(case, vector, tmp_path)
    monkeypatch.chdir(tmp_path)
    runs = runs_of_files(reports)
    expected = vector["upstream"]
    if "refusal" in expected:
        with pytest.raises(AggregationError) as err:
            aggregate(runs, split, case.num_seeds, case.pad_missing)
        assert err.value.upstream == expected["refusal"]["message"]
        assert "\n" not in err.value.line
        return
    ours = aggregate(runs, split, case.num_seeds, case.pad_missing)
    # exact: the same floats (JSON keeps a float's repr, so a round trip is exact)
    assert ours.upstream == expected["aggregate"]
    assert json.dumps(ours.upstream, indent=2) + "\n" == expected["printed_json"]
    assert [_seed_line(i, m) for i, m in enumerate(ours.per_seed)] == expected["seed_lines"]


@pytest.mark.parametrize("name", ["basic", "several_groups", "uneven_pad", "low_22x3", "split_with_absent"])
def test_the_aggregate_command_prints_upstreams_json(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    vector = json.loads((VECTORS / f"{name}.json").read_text())
    _inputs(case, vector, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLEBENCH_DIR", raising=False)
    args = [a.replace("<case dir>", str(tmp_path)) for a in vector["args"]]
    result = CliRunner().invoke(aggregate_cmd, [*args, "--json"])
    if "refusal" in vector["upstream"]:
        assert result.exit_code == 1 and "use --pad-missing" in result.output
        return
    assert result.exit_code == 0, result.output
    assert result.stdout == vector["upstream"]["printed_json"]
