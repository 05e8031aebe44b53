#!/usr/bin/env bats
# The bash library without Slurm and without containers: golden files of the grading, agent and LLM
# server container command lines (so that a changed or dropped flag fails here in a second instead of
# only in the leak tests), the grading server's memory from Slurm's variables, the agent's --nv,
# scratch and extra flags, the config inheritance of job steps, and mh_printable_stream. After a
# deliberate change: MH_UPDATE_GOLDEN=1 bats tests/bats/test_lib.bats, and review the diff of
# tests/bats/golden/ like code.

load helpers

GOLDEN=$BATS_TEST_DIRNAME/golden

# The config every test starts from, made once by the real loader (`mlebench-hpc config --shell`,
# the CLI the library itself finds) from a file that sets only the paths the golden files name:
# every other key is config.py's default. Only PATH, HOME and MH_ROOT reach the loader, so a
# variable of the caller's environment named like a key (STEP_LIMIT=...) cannot change a golden.
setup_file() {
    export MH_SCRIPTS=$REPO_ROOT/scripts_hpc
    # shellcheck source=scripts_hpc/lib.sh
    source "$MH_SCRIPTS/lib.sh"
    mh_init
    printf '%s\n' DATA_DIR=/data OUTPUT_BASE=/out GRADING_SIF=/img/grading.sif AGENT_SIF=/img/agent.sif \
        >"$BATS_FILE_TMPDIR/config.env"
    env -i PATH="$PATH" HOME="$HOME" MH_ROOT="$MH_ROOT" \
        "$MH_CLI" config --config "$BATS_FILE_TMPDIR/config.env" --shell >"$BATS_FILE_TMPDIR/config.sh"
}

setup() {
    T=$(mktemp -d "$BATS_TMPDIR/lib.XXXXXX")
    export MH_SCRIPTS=$REPO_ROOT/scripts_hpc
    # shellcheck source=scripts_hpc/lib.sh
    source "$MH_SCRIPTS/lib.sh"
    # shellcheck source=/dev/null # made by setup_file
    source "$BATS_FILE_TMPDIR/config.sh"
    # an argparse variant's command, as `run start` prints it
    MH_AGENT_ARGV=(bash /home/agent/start.sh --max-steps 20 --model "local model")
    MH_ROOT=$REPO_ROOT
    unset MH_AGENT_ENV SLURM_JOB_GPUS SLURM_STEP_GPUS CUDA_VISIBLE_DEVICES MH_CONFIG_CHECKED
    unset SLURM_MEM_PER_NODE SLURM_MEM_PER_NODE_HET_GROUP_0 SLURM_MEM_PER_CPU SLURM_CPUS_ON_NODE
    # Argument handling only: an `apptainer` on PATH so that the runtime is apptainer; never run.
    mkdir -p "$T/bin"
    printf '#!/bin/sh\nexit 99\n' >"$T/bin/apptainer"
    chmod +x "$T/bin/apptainer"
    PATH=$T/bin:$PATH
    export MLEBENCH_HPC_RUNTIME=apptainer
}

teardown() { rm -rf "$T"; }

# The arguments, one per line, with the test's temp dir written as <T>.
lines_of() { printf '%s\n' "$@" | sed "s|$T|<T>|g; s|$REPO_ROOT|<ROOT>|g"; }

# Compare with (or, with MH_UPDATE_GOLDEN=1, write) tests/bats/golden/NAME.
golden() {
    local name=$1 got=$T/$1
    cat >"$got"
    if [[ ${MH_UPDATE_GOLDEN:-0} == 1 ]]; then cp "$got" "$GOLDEN/$name"; fi
    diff -u "$GOLDEN/$name" "$got"
}

@test "the grading container command line matches its golden file" {
    mh_grading_cmd comp-a /out/.state/comp-a_42
    lines_of "${MH_CMD[@]}" | golden grading_cmd.txt
}

@test "the grading command gives the server the job's memory: het component 0's, --mem, or --mem-per-cpu x CPUs" {
    mh_grading_cmd comp-a /out/.state/comp-a_42
    [[ " ${MH_CMD[*]} " != *" --memory-limit-mb "* ]]
    SLURM_MEM_PER_NODE=1024 SLURM_MEM_PER_NODE_HET_GROUP_0=4096 mh_grading_cmd comp-a /out/.state/comp-a_42
    [[ " ${MH_CMD[*]} " == *" --memory-limit-mb 4096 "* ]]
    SLURM_MEM_PER_NODE=1024 mh_grading_cmd comp-a /out/.state/comp-a_42
    [[ " ${MH_CMD[*]} " == *" --memory-limit-mb 1024 "* ]]
    SLURM_MEM_PER_CPU=512 SLURM_CPUS_ON_NODE=3 mh_grading_cmd comp-a /out/.state/comp-a_42
    [[ " ${MH_CMD[*]} " == *" --memory-limit-mb 1536 "* ]]
    SLURM_MEM_PER_NODE=0 mh_grading_cmd comp-a /out/.state/comp-a_42
    [[ " ${MH_CMD[*]} " != *" --memory-limit-mb "* ]]
}

@test "the agent container command line matches its golden file (overlays, env file, scratch)" {
    local run=$T/run
    mkdir -p "$run/overlay"
    printf '%s\t%s\n' "$run/overlay/f1" /home/instructions.txt "$run/overlay/f2" /home/validate_submission.sh \
        >"$run/overlay/overlays.tsv"
    MH_AGENT_ENV=$T/agent.env MH_AGENT_SECS=3600
    mh_agent_cmd comp-a "$run" http://node1:5555 2>/dev/null
    lines_of "${MH_CMD[@]}" | golden agent_cmd.txt
    # the integrity check runs exactly these flags, only the final command replaced
    mh_agent_cmd_replace --bind /c:/c:ro -- /c/check
    [ "${MH_SWAPPED[*]:0:${#MH_AGENT_FLAGS[@]}+2}" = "apptainer exec ${MH_AGENT_FLAGS[*]}" ]
    [ "${MH_SWAPPED[*]: -3}" = "/c:/c:ro $AGENT_SIF /c/check" ]
}

@test "the LLM server's container command line matches its golden file (127.0.0.1, key from its env file)" {
    # shellcheck disable=SC2016 # LLM_CMD is expanded by the server's own bash
    LLM_SIF=/img/llm.sif LLM_MODEL_DIR=/models/qwen LLM_CMD='vllm serve "$LLM_MODEL_DIR" --port "$LLM_PORT"'
    CUDA_VISIBLE_DEVICES=0,1
    unset SLURM_GPUS_ON_NODE
    mh_llm_cmd local-qwen 41234 "$T/scratch" "$T/scratch/backend.env"
    lines_of "${MH_CMD[@]}" | golden llm_cmd.txt
    # On the host (LLM_SIF empty): the same environment, the key from the same env file, no flags.
    LLM_SIF=""
    mh_llm_cmd local-qwen 41234 "$T/scratch" "$T/scratch/backend.env"
    [ "${MH_CMD[0]} ${MH_CMD[1]}" = "bash -c" ]
    [[ " ${MH_CMD[*]} " == *" llm $T/scratch/backend.env LLM_MODEL=local-qwen LLM_MODEL_DIR=/models/qwen LLM_HOST=127.0.0.1 LLM_PORT=41234 LLM_NUM_GPUS=2 "* ]]
    [ "${MH_CMD[*]: -3}" = "bash -c $LLM_CMD" ]
    [[ " ${MH_CMD[*]} " != *" --contain "* && " ${MH_CMD[*]} " != *" --env-file "* ]]
}

@test "the agent command line: --nv only with GPUs, SCRATCH_DIR per run, extra flags after ours" {
    MH_AGENT_SECS=60 SCRATCH_DIR=$T/scratch APPTAINER_EXTRA_FLAGS="--bind /site:/site"
    mh_agent_cmd comp-a "$T/runs/g1/comp-a_7" http://n:1 2>/dev/null
    [[ " ${MH_CMD[*]} " != *" --nv "* ]]
    [[ " ${MH_CMD[*]} " == *" --workdir $T/scratch/g1/comp-a_7 "* ]]
    [[ " ${MH_CMD[*]} " == *" AGENT_DIR=/home/agent --bind /site:/site $AGENT_SIF "* ]]
    CUDA_VISIBLE_DEVICES=0 mh_agent_cmd comp-a "$T/runs/g1/comp-a_7" http://n:1 2>/dev/null
    [[ " ${MH_CMD[*]} " == *" --nv "* ]]
}

@test "a job step inherits its job's checked config: no second Python start for the same competition" {
    # Argument handling only: a stand-in CLI that records its calls and prints a config.
    cat >"$T/bin/cli" <<EOF
#!/bin/sh
echo "\$*" >>"$T/calls"
echo "export MH_STATE_BASE=/out/.state DATA_DIR=/data"
EOF
    chmod +x "$T/bin/cli"
    MH_CLI=$T/bin/cli
    unset MH_STATE_BASE
    mh_setup comp-a GRADING_SIF AGENT_SIF
    [ "$(wc -l <"$T/calls")" -eq 1 ]
    [ "$MH_CONFIG_CHECKED" = "comp-a:GRADING_SIF AGENT_SIF" ]
    mh_setup comp-a AGENT_SIF        # the agent step of the same job
    mh_setup comp-a GRADING_SIF      # its grading step
    [ "$(wc -l <"$T/calls")" -eq 1 ]
    mh_setup comp-b AGENT_SIF        # another competition: checked again
    [ "$(wc -l <"$T/calls")" -eq 2 ]
    mh_setup comp-b LLM_SIF          # a key the job did not check: checked again
    [ "$(wc -l <"$T/calls")" -eq 3 ]
    grep -qx -- "config --shell --need LLM_SIF --competition comp-b" "$T/calls"
}

@test "mh_printable_stream: every control byte escaped, C1 and bidi in UTF-8 too, text and tabs untouched" {
    local all="" i
    for ((i = 0; i < 32; i++)); do (( i == 10 )) || all+=$(printf "\\\\x%02x" "$i"); done
    # shellcheck disable=SC2059 # the format string holds the escapes (a NUL cannot be in a variable)
    printf "a${all}\x7f|\xc2\x85\xc2\x9b\xc2\x9f|\xd8\x9c\xe2\x80\x8e\xe2\x80\x8f\xe2\x80\xaa\xe2\x80\xae\xe2\x81\xa6\xe2\x81\xa9|é € 日本\tz\n" >"$T/raw"
    # control: the raw bytes are there (ESC, CSI as C1, RLO)
    grep -q $'\x1b' "$T/raw" && grep -q $'\xc2\x9b' "$T/raw" && grep -q $'\xe2\x80\xae' "$T/raw"
    mh_printable_stream <"$T/raw" >"$T/out"
    run cat "$T/out"
    assert_output "a\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08	\\x0b\\x0c\\r\\x0e\\x0f\\x10\\x11\\x12\\x13\\x14\\x15\\x16\\x17\\x18\\x19\\x1a\\x1b\\x1c\\x1d\\x1e\\x1f\\x7f|\\u0085\\u009b\\u009f|\\u061c\\u200e\\u200f\\u202a\\u202e\\u2066\\u2069|é € 日本	z"
    # nothing but printable text, tabs and newlines is left; lines stay lines, a last partial line stays
    run bash -c "LC_ALL=C grep -c \$'[\\x01-\\x08\\x0b-\\x1f\\x7f]' '$T/out'"
    assert_output 0
    printf 'one\ntwo\x1b' | mh_printable_stream >"$T/out2"
    [[ $(<"$T/out2") == $'one\ntwo\\x1b' && $(wc -l <"$T/out2") == 1 ]]
}
