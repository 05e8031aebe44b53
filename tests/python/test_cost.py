"""A run's cost from Slurm (mlebench_hpc.run.cost): parsing scontrol's and sacct's records, the hours
and the group's sums, the cgroup peak, the cost in grading reports and `status --watch`. The job's
own recording (`run cost` at its end) runs on the real cluster in tests/bats/test_cost.bats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlebench_hpc.results.costs import accounted_cost, with_costs
from mlebench_hpc.results.report import CompetitionReport, aggregate, now_utc
from mlebench_hpc.results.report_output import format_totals
from mlebench_hpc.run.cgroup_memory import job_cgroup_dirs, job_peak_mem_mb
from mlebench_hpc.run.cost import (
    combine_attempts,
    component_names,
    components_from_sacct,
    components_from_scontrol,
    format_group_cost,
    gpus_of,
    group_cost,
    mem_mb,
    node_list,
    records_of,
    run_cost,
    runtime_secs,
    valid_cost,
)
from mlebench_hpc.slurm.query import JobInfo, parse_sacct_parsable2, parse_scontrol_output
from mlebench_hpc.sweep.plan import record_submission, write_tasks_file
from mlebench_hpc.sweep.status_cli import progress_bar, status_cmd, watch_sweep

# `scontrol show job -d -o` of a hetjob on the test cluster (cpus 1 + 2, 100M + 200M, gpu:1 on the
# second component), 20 s into the job; only the fields this module reads are kept unchanged.
SCONTROL = """\
JobId=137 HetJobId=137 HetJobOffset=0 JobName=cost_probe.sh JobState=RUNNING Reason=None RunTime=00:00:20 \
TimeLimit=00:02:00 StartTime=2026-12-02T19:28:04 NodeList=localhost BatchHost=localhost NumNodes=1 NumCPUs=1 \
NumTasks=1 CPUs/Task=1 TRES=cpu=1,mem=100M,node=1,billing=1 Nodes=localhost CPU_IDs=0 Mem=100 GRES= \
MinMemoryNode=100M Command=/tmp/cost_probe.sh
JobId=138 HetJobId=137 HetJobOffset=1 JobName=cost_probe.sh JobState=RUNNING Reason=None RunTime=00:00:20 \
TimeLimit=00:02:00 StartTime=2026-12-02T19:28:04 NodeList=vm SchedNodeList=vm BatchHost=vm NumNodes=1 \
NumCPUs=2 NumTasks=1 CPUs/Task=2 TRES=cpu=2,mem=200M,node=1,billing=2 JOB_GRES=gpu:1 Nodes=vm CPU_IDs=0-1 \
Mem=200 GRES= MinMemoryNode=200M Command=/tmp/cost_probe.sh TresPerNode=gres:gpu:1
"""

# `sacct -j 200 --parsable2 --format=JobID,JobName,State,ElapsedRaw,AllocTRES,NodeList,MaxRSS,TRESUsageInMax`
# of a hetjob as Slurm's sacct documents its fields (a fixture: the test cluster keeps no accounting).
SACCT = """\
JobID|JobName|State|ElapsedRaw|AllocTRES|NodeList|MaxRSS|TRESUsageInMax
200+0|mlebench-het|COMPLETED|3600|billing=1,cpu=1,mem=4G,node=1|n1||
200+0.batch|batch|COMPLETED|3600|cpu=1,mem=4G,node=1|n1|2048K|cpu=00:00:01,energy=0,fs/disk=2332,mem=2048K,pages=0,vmem=108176K
200+0.0|bash|COMPLETED|3598|cpu=1,mem=4G,node=1|n1|310000K|cpu=00:00:10,energy=0,fs/disk=1,mem=310000K,pages=0,vmem=500000K
200+1|mlebench-het|CANCELLED by 1000|3600|billing=8,cpu=8,gres/gpu:a100=1,gres/gpu=1,mem=32G,node=1|g1||
200+1.0|bash|CANCELLED|3590|cpu=8,gres/gpu:a100=1,gres/gpu=1,mem=32G,node=1|g1|3000M|cpu=01:00:00,energy=0,gres/gpumem=0,mem=3174400K,pages=0,vmem=1G
"""


def records(text: str) -> list[JobInfo]:
    return [JobInfo(r["JobId"], r) for r in parse_scontrol_output(text)]


@pytest.mark.parametrize(
    ("text", "mb"),
    [("4G", 4096.0), ("200M", 200.0), ("123456K", 120.5625), ("1.5T", 1572864.0), ("512", 512.0), ("", None)],
)
def test_slurm_sizes_in_mib(text: str, mb: float | None) -> None:
    assert mem_mb(text) == mb


@pytest.mark.parametrize(
    ("fields", "gpus"),
    [
        ({"TRES": "cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=32G"}, (2, "a100")),
        ({"TRES": "cpu=2,mem=200M", "JOB_GRES": "gpu:a100:1(IDX:0)"}, (1, "a100")),
        ({"TRES": "cpu=2,mem=200M", "JOB_GRES": "gpu:1"}, (1, None)),
        ({"TRES": "cpu=2", "TresPerNode": "gres:gpu:h100:2", "NumNodes": "2"}, (4, "h100")),
        ({"TRES": "cpu=2,mem=200M"}, (0, None)),
    ],
)
def test_gpus_from_tres_job_gres_or_tres_per_node(
    fields: dict[str, str], gpus: tuple[int, str | None]
) -> None:
    assert gpus_of(fields) == gpus


def test_times_nodes_and_names() -> None:
    assert runtime_secs("1-02:03:04") == 93784.0
    assert runtime_secs("05:06") == 306.0
    assert runtime_secs("UNLIMITED") is None
    assert node_list("n1,n[2-3],g4") == ["n1", "n[2-3]", "g4"]
    assert component_names("grading,agent+llm") == [("grading", []), ("agent", ["llm"])]


def test_hetjob_cost_from_scontrol_counts_every_component() -> None:
    comps = components_from_scontrol(
        records(SCONTROL), "grading,agent+llm", {"grading": 236.5, "agent": 44.7}
    )
    cost = run_cost(comps, "allocation", "137")
    assert cost is not None
    assert [c["name"] for c in cost["components"]] == ["grading", "agent"]
    assert cost["components"][1]["with"] == ["llm"]
    assert cost["elapsed_s"] == 20.0
    assert cost["cpu_hours"] == pytest.approx((1 * 20 + 2 * 20) / 3600)
    assert cost["gpu_hours"] == pytest.approx(1 * 20 / 3600)  # GPUs x elapsed
    assert cost["peak_mem_mb"] == 236.5
    assert cost["hardware"] == {"cpus": 2, "mem_mb": 200.0, "gpus": 1, "gpu_type": None, "nodes": ["vm"]}
    assert valid_cost(cost) is cost


def test_sacct_rows_by_component_with_the_peak_of_their_steps() -> None:
    rows = parse_sacct_parsable2(SACCT)
    assert len(rows) == 5 and rows[3]["State"] == "CANCELLED by 1000"
    cost = run_cost(components_from_sacct(rows, "grading,agent"), "sacct", "200")
    assert cost is not None
    assert cost["source"] == "sacct"
    assert (cost["elapsed_s"], cost["cpu_hours"], cost["gpu_hours"]) == (3600.0, 9.0, 1.0)
    assert cost["peak_mem_mb"] == 3100.0  # TRESUsageInMax mem of step 200+1.0
    assert [c["peak_mem_mb"] for c in cost["components"]] == [pytest.approx(302.734375), 3100.0]
    assert cost["hardware"] == {"cpus": 8, "mem_mb": 32768.0, "gpus": 1, "gpu_type": "a100", "nodes": ["g1"]}


def test_requeued_attempts_add_up_and_groups_sum() -> None:
    a = {"source": "allocation", "elapsed_s": 100.0, "cpu_hours": 1.0, "gpu_hours": 0.5, "peak_mem_mb": 10.0}
    b = {"source": "allocation", "elapsed_s": 50.0, "cpu_hours": 0.5, "gpu_hours": 0.25, "peak_mem_mb": 30.0}
    both = combine_attempts([a, b])
    assert (both["elapsed_s"], both["cpu_hours"], both["gpu_hours"], both["peak_mem_mb"]) == (
        150.0,
        1.5,
        0.75,
        30.0,
    )
    assert both["attempts"] == 2
    s = {**a, "source": "sacct", "peak_mem_mb": None}
    g = group_cost([both, s, None, {"source": "allocation", "elapsed_s": "forged"}])
    assert g == {
        "source": "mixed",
        "elapsed_s": 250.0,
        "cpu_hours": 2.5,
        "gpu_hours": 1.25,
        "peak_mem_mb": 30.0,
        "runs_with_cost": 2,
        "runs_without_cost": 2,
    }
    line = format_group_cost(g)
    assert line.startswith("cost: elapsed 0:04:10, CPU-hours 2.500, GPU-hours 1.250, peak memory 30 MiB")
    assert "2 runs without a cost" in line


def test_the_jobs_cgroup_peak(tmp_path: Path) -> None:
    v1 = "6:freezer:/slurm_vm/uid_0/job_138/step_0\n4:memory:/slurm_vm/uid_0/job_138/step_0/task_0\n0::/\n"
    assert job_cgroup_dirs(v1, tmp_path) == [tmp_path / "memory/slurm_vm/uid_0/job_138"]
    v2 = "0::/system.slice/slurmstepd.scope/job_9/step_batch/user/task_0\n"
    assert job_cgroup_dirs(v2, tmp_path) == [tmp_path / "system.slice/slurmstepd.scope/job_9"]
    assert job_cgroup_dirs("0::/user.slice/session-1.scope\n", tmp_path) == []
    assert job_peak_mem_mb(tmp_path) is None  # this process is in no Slurm job here


def report(run_dir: Path | None, cost: object = None) -> CompetitionReport:
    return CompetitionReport(
        "demo-diabetes", None, None, None, None, None, False, False, False, False, False, False, False,
        None, now_utc(), "x.csv", run_dir=str(run_dir) if run_dir else None, cost=cost,
    )  # fmt: skip


def test_grading_reads_the_cost_the_job_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the recorded allocation, as on a site without accounting (where this cluster has it, its own
    # job 137 would answer for the fixture's)
    monkeypatch.setattr("mlebench_hpc.slurm.query.accounting_enabled", lambda: False)
    recorded = run_cost(components_from_scontrol(records(SCONTROL), "grading,agent", {}), "allocation", "137")
    good, forged, none = tmp_path / "good", tmp_path / "forged", tmp_path / "none"
    for d, meta in (
        (good, {"cost": recorded}),
        (forged, {"cost": {"source": "agent", "gpu_hours": 0}}),
        (none, {}),
    ):
        d.mkdir()
        (d / "metadata.json").write_text(
            json.dumps({"competition_id": "demo-diabetes", "status": "finished", **meta})
        )
    reports = with_costs([report(good), report(forged), report(none), report(None)])
    assert [r.cost is not None for r in reports] == [True, False, False, False]
    group = aggregate(reports)
    assert group["cost"]["runs_with_cost"] == 1 and group["cost"]["runs_without_cost"] == 3
    assert group["cost"]["gpu_hours"] == pytest.approx(20 / 3600)
    assert group["competition_reports"][0]["cost"] == recorded
    assert (
        format_totals(group)
        .splitlines()[-1]
        .startswith("cost: elapsed 0:00:20, CPU-hours 0.017, GPU-hours 0.006")
    )


def ended_sweep(tmp_path: Path) -> Path:
    g = tmp_path / "group"
    tasks = g / ".sweep" / "tasks-1.tsv"
    write_tasks_file(tasks, [("A", "a", 0), ("A", "a", 1)])
    record_submission(g, "10", tasks, {"seeds": 2}, "sbatch", "A")
    cost = {
        "source": "allocation",
        "elapsed_s": 3600.0,
        "cpu_hours": 2.0,
        "gpu_hours": 1.0,
        "peak_mem_mb": 5.0,
    }
    for i, status in enumerate(("finished", "failed")):
        run = g / f"a_10_{i}"
        run.mkdir()
        meta = {"competition_id": "a", "seed": str(i), "agent_id": "A", "status": status, "exit_code": str(i)}
        meta.update(sweep_array_job_id="10", sweep_task_index=str(i), submission_exists=str(i == 0).lower())
        meta["cost"] = cost
        (run / "metadata.json").write_text(json.dumps(meta))
    return g


def test_status_adds_the_hours_so_far(tmp_path: Path) -> None:
    out = CliRunner().invoke(status_cmd, [str(ended_sweep(tmp_path)), "--no-slurm"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[-1] == "2 pairs: 1 finished, 1 failed"
    assert lines[-2].startswith(
        "cost so far: CPU-hours 4.000, GPU-hours 2.000 (2 runs recorded at their end, 0 running"
    )


def test_watch_ends_with_the_sweep_plain_or_with_a_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = ended_sweep(tmp_path)
    assert watch_sweep(g, 0.5, use_slurm=False, tty=False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        len(lines) == 4
        and "2 pairs: 1 finished, 1 failed; elapsed " in lines[0]
        and "GPU-hours 2.000" in lines[0]
    )
    assert lines[1:3] == ["sweep ended:", "2 pairs: 1 finished, 1 failed"]
    assert watch_sweep(g, 0.5, use_slurm=False, tty=True) == 0
    assert capsys.readouterr().out.startswith("\r\x1b[K[" + "#" * 30 + "] 2/2 2 pairs")
    assert progress_bar(1, 4, 8) == "[##------] 1/4"


def test_watch_of_no_sweep_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert watch_sweep(tmp_path, 0.5, use_slurm=False, tty=False) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def test_the_records_of_the_job_itself() -> None:
    # `scontrol show job <array id>` lists every task of the array; an array task is `<array>_<index>`
    tasks = [
        JobInfo("160", {"JobId": "160", "ArrayJobId": "160", "ArrayTaskId": "1"}),
        JobInfo("161", {"JobId": "161", "ArrayJobId": "160", "ArrayTaskId": "0"}),
    ]
    assert [r.job_id for r in records_of(tasks, "160_0")] == ["161"]
    assert [r.job_id for r in records_of(tasks, "160")] == ["160"]
    assert [r.job_id for r in records_of(records(SCONTROL), "137")] == ["137", "138"]  # a hetjob's components


def test_run_cost_without_a_known_job_says_why_and_keeps_the_run(tmp_path: Path) -> None:
    from mlebench_hpc.run.phases import run_cmd

    (tmp_path / "metadata.json").write_text(json.dumps({"status": "finished"}))
    out = CliRunner().invoke(run_cmd, ["cost", str(tmp_path), "--job", "999999990"])
    assert out.exit_code == 0, out.output
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["status"] == "finished" and "cost" not in meta
    assert meta["cost_unknown"] and "\n" not in meta["cost_unknown"]
    # outside a Slurm job there is no job cgroup: a step's peak records nothing
    out = CliRunner().invoke(run_cmd, ["cost", str(tmp_path), "--job", "1", "--peak-of", "agent"])
    assert out.exit_code == 0 and "cost_peaks" not in json.loads((tmp_path / "metadata.json").read_text())


def test_grading_takes_sacct_rows_of_the_runs_own_job() -> None:
    rows = parse_sacct_parsable2(SACCT) + [
        {"JobID": "2000+0", "ElapsedRaw": "5", "AllocTRES": "cpu=64,gres/gpu=8", "NodeList": "x"},
    ]
    cost = accounted_cost({"agent_job_id": "200"}, rows)
    assert cost is not None and cost["source"] == "sacct" and cost["gpu_hours"] == 1.0  # not 2000's
    assert [c["name"] for c in cost["components"]] == ["grading", "agent"]
    assert accounted_cost({"agent_job_id": "201"}, rows) is None  # sacct does not know it
    # a requeued run: sacct keeps the last attempt only, the job's own sum of attempts stands
    two = {"source": "allocation", "elapsed_s": 1.0, "cpu_hours": 1.0, "gpu_hours": 1.0, "attempts": 2}
    assert accounted_cost({"agent_job_id": "200", "cost": two}, rows) is None
