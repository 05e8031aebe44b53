"""The #SBATCH defaults of the entry scripts come from one table (mlebench_hpc.slurm.sbatch): each
script's block is the table's, the time limits keep their order, and a drift is caught and fixed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.config import SETTINGS
from mlebench_hpc.slurm import sbatch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts_hpc"


def _default(key: str) -> int:
    return int(next(s.default for s in SETTINGS if s.key == key))


def test_every_script_holds_the_tables_block() -> None:
    for script in sbatch.ENTRY_SCRIPTS:
        text = (SCRIPTS / script.name).read_text()
        assert sbatch.current_header(text) == sbatch.header(script), script.name
    assert CliRunner().invoke(sbatch.sbatch_headers_cmd, []).exit_code == 0


def test_no_other_script_has_sbatch_lines() -> None:
    """A new entry script gets its defaults from the table too."""
    named = {s.name for s in sbatch.ENTRY_SCRIPTS}
    with_lines = {p.name for p in SCRIPTS.rglob("*.sh") if sbatch.current_header(p.read_text())}
    assert with_lines == named


def test_time_limits_keep_their_order() -> None:
    """A job that runs an agent has room for the default budget and margin; a server job outlives it;
    the components of a heterogeneous job share one limit."""
    budget = _default("TIME_LIMIT_SECS") + _default("TIME_MARGIN_SECS")
    agent_times, server_times = [], []
    for script in sbatch.ENTRY_SCRIPTS:
        times = [sbatch.slurm_seconds(dict(c)["time"]) for c in script.components]
        assert len(set(times)) == 1, script.name
        (agent_times if script.runs_agent else server_times).append(times[0])
        assert script.runs_agent != script.runs_server, script.name
    assert min(agent_times) >= budget
    assert min(server_times) > max(agent_times)


def test_only_valid_keys() -> None:
    bad = sbatch.EntryScript("x.sh", ((("partition", "gpu"),),), runs_agent=True, runs_server=False)
    with pytest.raises(ValueError, match="--partition is not an sbatch default"):
        sbatch.header(bad)


@pytest.mark.parametrize(("value", "secs"), [("1-01:00:00", 90000), ("02:00:30", 7230), ("15", 900)])
def test_slurm_seconds(value: str, secs: int) -> None:
    assert sbatch.slurm_seconds(value) == secs


def test_a_drifted_block_is_named_then_rewritten(tmp_path: Path) -> None:
    copy = tmp_path / "scripts_hpc"
    shutil.copytree(SCRIPTS, copy)
    agent = copy / "slurm_agent.sh"
    agent.write_text(agent.read_text().replace("#SBATCH --mem=32G", "#SBATCH --mem=16G"))
    runner = CliRunner()
    result = runner.invoke(sbatch.sbatch_headers_cmd, ["--scripts", str(copy)])
    assert result.exit_code == 1
    assert "#SBATCH blocks differ" in result.output and "slurm_agent.sh" in result.output
    assert "slurm_hetjob.sh" not in result.output
    result = runner.invoke(sbatch.sbatch_headers_cmd, ["--scripts", str(copy), "--write"])
    assert result.exit_code == 0, result.output
    assert agent.read_text() == (SCRIPTS / "slurm_agent.sh").read_text()
    assert runner.invoke(sbatch.sbatch_headers_cmd, ["--scripts", str(copy)]).exit_code == 0
