"""A sweep's CPU- and GPU-hours so far, for `status`: runs that ended by the cost their job recorded
at its end (metadata.json `cost`), tasks Slurm runs now by their allocation x elapsed so far
(`scontrol show job -d`, one call per array job)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlebench_hpc.run.cost import components_from_scontrol, run_cost, valid_cost
from mlebench_hpc.slurm import query as slurm_query
from mlebench_hpc.sweep.plan import RUNNING_STATES
from mlebench_hpc.sweep.status import SweepStatus


@dataclass(frozen=True)
class CostSoFar:
    cpu_hours: float
    gpu_hours: float
    recorded: int  # ended runs with a recorded cost
    running: int  # tasks running now, from Slurm
    slurm_asked: bool

    def line(self) -> str:
        line = (
            f"cost so far: CPU-hours {self.cpu_hours:.3f}, GPU-hours {self.gpu_hours:.3f} "
            f"({self.recorded} run{'s' if self.recorded != 1 else ''} recorded at their end, "
            f"{self.running} running from Slurm"
        )
        if not self.slurm_asked:
            line += "; running tasks not counted: Slurm not asked or no answer"
        return line + ")"


def running_costs(job_ids: list[str]) -> list[dict[str, Any]]:
    """The cost so far of each running task among JOB_IDS (`<array>_<index>`, or a plain job id)."""
    wanted = set(job_ids)
    out: list[dict[str, Any]] = []
    for array in sorted({j.split("_")[0] for j in wanted}):
        try:
            records = slurm_query.show_job(array, detail=True) or []
        except slurm_query.SlurmError:
            continue
        for rec in records:
            task = rec.get("ArrayTaskId")
            tid = f"{rec.get('ArrayJobId')}_{task}" if task and task.isdigit() else rec.job_id
            if tid in wanted and rec.state in RUNNING_STATES:
                cost = run_cost(components_from_scontrol([rec], "agent+grading", {}), "allocation", tid)
                if cost is not None:
                    out.append(cost)
    return out


def cost_so_far(st: SweepStatus) -> CostSoFar:
    running = set(st.running)
    recorded = [c for r in st.runs if r.slurm_job_id not in running if (c := valid_cost(r.meta.get("cost")))]
    live = running_costs(st.running) if st.running else []
    every = recorded + live
    return CostSoFar(
        cpu_hours=sum(float(c["cpu_hours"]) for c in every),
        gpu_hours=sum(float(c["gpu_hours"]) for c in every),
        recorded=len(recorded),
        running=len(live),
        slurm_asked=st.slurm_answered,
    )
