"""The one `mlebench-hpc` command. Sub-commands live in their own modules and are imported
lazily, so `mlebench-hpc run start` in an sbatch script does not pay for pandas."""

from __future__ import annotations

import importlib
import importlib.util

import click

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "prepare-demo": "mlebench_hpc.demo:prepare_demo_cmd",
    "serve": "mlebench_hpc.server.main:serve_cmd",
    "grade": "mlebench_hpc.results.grade_cli:grade_cmd",
    "aggregate": "mlebench_hpc.results.aggregate_cli:aggregate_cmd",
    "overlay": "mlebench_hpc.run.overlay:overlay_cmd",
    "config": "mlebench_hpc.config:config_cmd",
    "llm-ready": "mlebench_hpc.llm.endpoint:llm_ready_cmd",
    "llm-watch": "mlebench_hpc.llm.endpoint:llm_watch_cmd",
    "llm-proxy": "mlebench_hpc.llm.proxy:llm_proxy_cmd",
    "run": "mlebench_hpc.run.phases:run_cmd",
    "slurm-restarts": "mlebench_hpc.slurm.query:slurm_restarts_cmd",
    "slurm-step": "mlebench_hpc.slurm.query:slurm_step_cmd",
    "sbatch-headers": "mlebench_hpc.slurm.sbatch:sbatch_headers_cmd",
    "doctor": "mlebench_hpc.doctor:doctor_cmd",
    "status": "mlebench_hpc.sweep.status_cli:status_cmd",
    "sweep-plan": "mlebench_hpc.sweep.plan:sweep_plan_cmd",
    "base-image": "mlebench_hpc.images.base:base_image_cmd",
    "dockerfile-def": "mlebench_hpc.images.dockerfile_def:dockerfile_def_cmd",
    "agent": "mlebench_hpc.agents.cli:agent_cmd",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._importable(name))

    @staticmethod
    def _importable(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not self._importable(cmd_name):
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="mlebench-hpc")
def main() -> None:
    """MLE-bench on Slurm + Apptainer: grading server, URL discovery, overlays, grading."""


if __name__ == "__main__":
    main()
