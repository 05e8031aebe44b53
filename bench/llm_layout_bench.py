"""Benchmark of where the LLM server of a run goes: prints figures, asserts nothing.

Two layouts of one heterogeneous job, each a prototype batch script made here, with the real
LLM server job (scripts_hpc/slurm_llm_server.sh, the stand-in as its LLM_CMD) as a step:
  three   component 0 CPU (grading), 1 GPU (LLM server), 2 GPU (agent)
  shared  component 0 CPU (grading), 1 GPU (LLM server and agent, two steps side by side)
The agent step asks the LLM's /v1/models from its own node, with the key it registered. Per round
and layout it prints: queue (sbatch -> batch script running), llm_ready (LLM step started ->
/v1/models lists the model, found by auto:JOBID), agent (agent step launch -> its end), stop (LLM
step told to stop -> gone), total (sbatch -> job gone from squeue), nodes of each component and the
GPUs the job held.
With --blocker, a job first holds one GPU node's GPU for --blocker-secs, as on a busy cluster.

    flock /tmp/mlebench-cluster.lock .venv/bin/python bench/llm_layout_bench.py [--rounds 3] [--blocker]
"""

from __future__ import annotations

import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "mlebench-hpc"
STANDIN = REPO / "tests" / "llm_standin" / "server.py"
MODEL = "standin-sklearn"

HEADER = """#!/usr/bin/env bash
#SBATCH --job-name=mh-bench-{layout}
#SBATCH --output={out}/%x-%j.out
#SBATCH --time=00:10:00
#SBATCH --cpus-per-task=1
#SBATCH --mem=500M
#SBATCH hetjob
#SBATCH --time=00:10:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --gres=gpu:1
"""
THIRD = """#SBATCH hetjob
#SBATCH --time=00:10:00
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --gres=gpu:1
"""
BODY = """set -euo pipefail
AGENT='
import sys, time, urllib.request
env = dict(line.rstrip("\\n").split("=", 1) for line in open(sys.argv[1]))
req = urllib.request.Request(env["LLM_BASE_URL"] + "/models")
req.add_header("Authorization", "Bearer " + env["LLM_API_KEY"])
urllib.request.urlopen(req, timeout=10).read()
print("T agent_end", time.time())
'
now() {{ date +%s.%N; }}
echo "T batch_start $(now)"
scontrol show job -o "$SLURM_JOB_ID" | sed 's/^/J /'
export MH_JOB_ID=$SLURM_JOB_ID MLEBENCH_HPC_CONFIG={cfg}
echo "T llm_launch $(now)"
srun --het-group=1 --ntasks=1 {overlap} bash {repo}/scripts_hpc/slurm_llm_server.sh {model} &
llm=$!
# as an agent run does: its own key registered with the server's proxy, its LLM lines in an env file
eval "$({cli} llm-ready auto:$SLURM_JOB_ID --model {model} --timeout 120 --state-dir {state} \\
    --run-id bench_$SLURM_JOB_ID --env-file {state}/bench.env --shell)"
echo "T llm_ready $(now)"
echo "T agent_launch $(now)"
srun --het-group={agent_group} --ntasks=1 {overlap} {python} -c "$AGENT" {state}/bench.env
echo "T stop_llm $(now)"
# the LLM step is the first step of component 1, whose job id is SLURM_JOB_ID_HET_GROUP_1
scancel --signal=TERM "$SLURM_JOB_ID_HET_GROUP_1.0" || true
for _ in $(seq 300); do kill -0 "$llm" 2>/dev/null || break; sleep 0.1; done
kill -0 "$llm" 2>/dev/null && {{ echo "LLM step still running 30 s after SIGTERM"; exit 1; }}
echo "T llm_gone $(now)"
"""


def write_job(layout: str, work: Path, cfg: Path) -> Path:
    text = HEADER.format(layout=layout, out=work)
    if layout == "three":
        text += THIRD
    text += BODY.format(
        cfg=shlex.quote(str(cfg)),
        repo=shlex.quote(str(REPO)),
        cli=shlex.quote(str(CLI)),
        python=shlex.quote(sys.executable),
        model=MODEL,
        state=shlex.quote(str(work / "runs" / ".state")),
        agent_group=2 if layout == "three" else 1,
        overlap="" if layout == "three" else "--overlap",
    )
    path = work / f"{layout}.sbatch"
    path.write_text(text)
    return path


def write_config(work: Path) -> Path:
    standin = f"exec {shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}"
    cfg = work / "config.env"
    cfg.write_text(
        f'OUTPUT_BASE={work}/runs\nLLM_MODEL={MODEL}\nLLM_SIF=""\n'
        f'LLM_CMD=\'{standin} --model "$LLM_MODEL" --host "$LLM_HOST" --port "$LLM_PORT"\'\n'
    )
    return cfg


def squeue_has(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def gpus_and_nodes(out: str) -> tuple[int, list[str]]:
    """GPUs held and node of each component, from the job's own `scontrol show job` lines."""
    gpus, nodes = 0, []
    for line in out.splitlines():
        if not line.startswith("J "):
            continue
        # TRES lists gres/gpu only where accounting tracks it; TresPerNode always has the request
        m = re.search(r"\bTRES=\S*gres/gpu=(\d+)", line) or re.search(
            r"\bTresPerNode=\S*gres[:/]gpu:(\d+)", line
        )
        gpus += int(m.group(1)) if m else 0
        node = re.search(r"\bNodeList=(\S+)", line)
        nodes.append(node.group(1) if node else "?")
    return gpus, nodes


def squeue_state(job: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True).stdout
    first = (out.strip().splitlines() or ["|"])[0]
    state, _, reason = first.partition("|")
    return state, reason


def run_once(layout: str, script: Path, work: Path, start_timeout: float) -> dict[str, float | str | int]:
    t_submit = time.time()
    job = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
    job_id = job.stdout.strip().split(";")[0]
    while True:
        state, reason = squeue_state(job_id)
        if not state:
            break
        if state == "PENDING" and time.time() - t_submit > start_timeout:
            subprocess.run(["scancel", job_id], check=False)
            while squeue_has(job_id):
                time.sleep(0.2)
            return {"job": job_id, "never_started": f"still PENDING ({reason}) after {start_timeout:.0f}s"}
        time.sleep(0.2)
    t_gone = time.time()
    out = (work / f"mh-bench-{layout}-{job_id}.out").read_text()
    marks = {m[1]: float(m[2]) for m in re.finditer(r"^T (\w+) ([0-9.]+)", out, re.MULTILINE)}
    missing = {"batch_start", "llm_ready", "agent_end", "llm_gone"} - set(marks)
    if missing:
        raise click.ClickException(f"{layout} job {job_id} stopped before {sorted(missing)}:\n{out}")
    gpus, nodes = gpus_and_nodes(out)
    return {
        "job": job_id,
        "queue": marks["batch_start"] - t_submit,
        "llm_ready": marks["llm_ready"] - marks["llm_launch"],
        "agent": marks["agent_end"] - marks["agent_launch"],
        "stop": marks["llm_gone"] - marks["stop_llm"],
        "total": t_gone - t_submit,
        "gpus": gpus,
        "nodes": ",".join(nodes),
    }


@click.command()
@click.option("--rounds", default=3, show_default=True, help="Jobs per layout.")
@click.option("--blocker", is_flag=True, help="Hold one GPU node's GPU while submitting (a busy cluster).")
@click.option("--blocker-secs", default=40, show_default=True)
@click.option("--start-timeout", default=120.0, show_default=True, help="Give up on a job pending this long.")
def main(rounds: int, blocker: bool, blocker_secs: int, start_timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mh-llm-bench-") as tmp:
        work = Path(tmp)
        cfg = write_config(work)
        scripts = {layout: write_job(layout, work, cfg) for layout in ("three", "shared")}
        rows: dict[str, list[dict[str, float | str | int]]] = {k: [] for k in scripts}
        for _ in range(rounds):
            for layout, script in scripts.items():
                blocker_id = None
                if blocker:
                    b = subprocess.run(
                        ["sbatch", "--parsable", "--gres=gpu:1", "--cpus-per-task=1", "--mem=100M",
                         f"--output={work}/blocker-%j.out", f"--wrap=sleep {blocker_secs}"],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    blocker_id = b.stdout.strip()
                    while (
                        "R"
                        not in subprocess.run(
                            ["squeue", "-h", "-j", blocker_id, "-o", "%t"], capture_output=True, text=True
                        ).stdout
                    ):
                        time.sleep(0.2)
                rows[layout].append(run_once(layout, script, work, start_timeout))
                if blocker_id:
                    subprocess.run(["scancel", blocker_id], check=False)
                    while squeue_has(blocker_id):
                        time.sleep(0.2)
        keys = ("queue", "llm_ready", "agent", "stop", "total")
        print(
            f"{'layout':8} {'job':>6} " + " ".join(f"{k:>9}" for k in keys) + "  gpus  nodes (per component)"
        )
        for layout, runs in rows.items():
            for r in runs:
                if "never_started" in r:
                    print(f"{layout:8} {r['job']:>6} never started: {r['never_started']}")
                    continue
                figures = " ".join(f"{float(r[k]):9.2f}" for k in keys)
                print(f"{layout:8} {r['job']:>6} {figures}  {r['gpus']:4}  {r['nodes']}")
        print("medians (s):")
        for layout, runs in rows.items():
            done = [r for r in runs if "never_started" not in r]
            if not done:
                print(f"  {layout:8} no run started")
                continue
            med = {k: statistics.median(float(r[k]) for r in done) for k in keys}
            print(
                f"  {layout:8} "
                + "  ".join(f"{k} {v:.2f}" for k, v in med.items())
                + f"  gpus {done[0]['gpus']}"
            )


if __name__ == "__main__":
    main()
