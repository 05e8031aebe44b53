# shellcheck shell=bash
# mlebench-hpc: the one library every sbatch script sources; it loads scripts_hpc/lib/*.sh, one
# file per concern. Callers: set -euo pipefail; export MH_SCRIPTS=<dir of this file>; source it.
#   lib/log.sh         mh_log, mh_die, the no-isolation warning, the outro of every agent job
#   lib/config.sh      the CLI, the config (from the Python loader), the runtime
#   lib/slurm.sh       job ids, hetjob steps, the job's cost
#   lib/containers.sh  the apptainer command lines and the integrity check: flags live only here
#   lib/state.sh       token, agent env file, URL file (the run record: `mlebench-hpc run <phase>`)
#   lib/process.sh     stopping processes and process groups
#   lib/llm.sh         the agent's LLM endpoint and the LLM server
# The files sit next to this one whoever sources it (a test may not set MH_SCRIPTS).
MH_SCRIPTS=${MH_SCRIPTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
# shellcheck source=scripts_hpc/lib/log.sh
source "$MH_SCRIPTS/lib/log.sh"
# shellcheck source=scripts_hpc/lib/config.sh
source "$MH_SCRIPTS/lib/config.sh"
# shellcheck source=scripts_hpc/lib/slurm.sh
source "$MH_SCRIPTS/lib/slurm.sh"
# shellcheck source=scripts_hpc/lib/containers.sh
source "$MH_SCRIPTS/lib/containers.sh"
# shellcheck source=scripts_hpc/lib/state.sh
source "$MH_SCRIPTS/lib/state.sh"
# shellcheck source=scripts_hpc/lib/process.sh
source "$MH_SCRIPTS/lib/process.sh"
# shellcheck source=scripts_hpc/lib/llm.sh
source "$MH_SCRIPTS/lib/llm.sh"
