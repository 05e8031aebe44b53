#!/usr/bin/env bash
# entrypoint_hpc.sh: start an agent inside the agent container, the HPC way.
#
# Replaces upstream's root-only entrypoint (which chmods /home and starts the grading server
# as root, and fails on Apptainer's read-only image). Needs no root and writes nothing outside
# $AGENT_HOME/{logs,submission,code} and /tmp. Steps:
#   1. log to $AGENT_HOME/logs/entrypoint.log (and stderr)
#   2. wait (bounded: HEALTH_TIMEOUT_SECS, default 120) until "$GRADING_SERVER/health" answers,
#      and names $COMPETITION_ID when both are known; exit 3 with a clear message otherwise
#   3. run the agent command ("$@", default $AGENT_HOME/agent/start.sh) under `timeout` of
#      TIME_LIMIT_SECS (default 86400); its output also goes to logs/agent_output.log
#   4. exit with the agent's exit code (124 when the time limit stopped it)
# AGENT_HOME (default /home) prefixes every path, so the script also runs without a container.
set -euo pipefail

AGENT_HOME=${AGENT_HOME:-/home}
LOGS_DIR=$AGENT_HOME/logs
LOG=$LOGS_DIR/entrypoint.log
TIME_LIMIT_SECS=${TIME_LIMIT_SECS:-86400}
HEALTH_TIMEOUT_SECS=${HEALTH_TIMEOUT_SECS:-120}
KILL_AFTER_SECS=${KILL_AFTER_SECS:-30}

log() { printf '[entrypoint %s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
fail() { log "ERROR: $2"; exit "$1"; }

if ! { mkdir -p "$LOGS_DIR" && touch "$LOG"; } 2>/dev/null; then
    echo "[entrypoint] ERROR: $LOGS_DIR is not writable: bind the run's logs directory there" >&2
    exit 2
fi
[[ $TIME_LIMIT_SECS =~ ^[0-9]+$ && $TIME_LIMIT_SECS -gt 0 ]] \
    || fail 2 "TIME_LIMIT_SECS must be a positive number of seconds, got '$TIME_LIMIT_SECS'"
[[ $HEALTH_TIMEOUT_SECS =~ ^[0-9]+$ ]] || fail 2 "HEALTH_TIMEOUT_SECS must be a number, got '$HEALTH_TIMEOUT_SECS'"

# GET url -> body on stdout; curl when the image has it, else Python's standard library.
http_get() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 5 "$1"
    else
        python3 -c 'import sys, urllib.request as u; sys.stdout.write(u.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
    fi
}

wait_for_server() {
    local url=${GRADING_SERVER%/}/health start=$SECONDS delay=0.5 body=""
    log "waiting up to ${HEALTH_TIMEOUT_SECS}s for $url"
    while true; do
        if body=$(http_get "$url" 2>/dev/null) && [[ $body == *'"running"'* ]]; then
            if [[ -n ${COMPETITION_ID:-} && $body == *'"competition"'* && $body != *"\"$COMPETITION_ID\""* ]]; then
                fail 3 "the grading server at $GRADING_SERVER serves another competition ($body), not $COMPETITION_ID: check the URL"
            fi
            log "grading server healthy after $((SECONDS - start))s: $body"
            return 0
        fi
        ((SECONDS - start < HEALTH_TIMEOUT_SECS)) \
            || fail 3 "grading server $url did not answer within ${HEALTH_TIMEOUT_SECS}s: is the grading job running and reachable from this node?"
        sleep "$delay"
        [[ $delay == 0.5 ]] && delay=1 || delay=2
    done
}

main() {
    local cmd=("$@")
    ((${#cmd[@]})) || cmd=("$AGENT_HOME/agent/start.sh")
    log "start: user $(id -un 2>/dev/null || id -u) on $(hostname 2>/dev/null || echo unknown)," \
        "competition ${COMPETITION_ID:-unset}, TIME_LIMIT_SECS=$TIME_LIMIT_SECS, STEP_LIMIT=${STEP_LIMIT:-unset}"
    [[ -n ${GRADING_SERVER:-} ]] || fail 2 "GRADING_SERVER is not set: pass the grading server's base URL (--env GRADING_SERVER=http://host:port)"
    wait_for_server

    log "running: ${cmd[*]} (time limit ${TIME_LIMIT_SECS}s)"
    local child rc=0 start=$SECONDS
    # timeout runs the agent in its own process group and signals the whole group at the
    # limit; the agent's output is kept in logs/ as well as shown on the job's output.
    timeout --kill-after="$KILL_AFTER_SECS" "$TIME_LIMIT_SECS" "${cmd[@]}" \
        > >(tee -a "$LOGS_DIR/agent_output.log") 2> >(tee -a "$LOGS_DIR/agent_output.log" >&2) &
    child=$!
    # Slurm stops a job with SIGTERM: pass it on to timeout (which passes it to the agent).
    trap 'log "signal received: stopping the agent"; kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
    while true; do
        rc=0
        wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break  # wait was interrupted by a trapped signal: wait again
    done
    trap - TERM INT HUP
    case $rc in
        124) log "agent TIMED OUT after $((SECONDS - start))s (limit ${TIME_LIMIT_SECS}s): exit code 124" ;;
        137) log "agent killed (SIGKILL) after $((SECONDS - start))s; it ignored SIGTERM at the time limit: exit code 137" ;;
        *) log "agent exited with code $rc after $((SECONDS - start))s" ;;
    esac
    exit "$rc"
}

main "$@"
