# shellcheck shell=bash
# Stopping what we started: a process and its children, or a whole process group.

# Stop a background process and everything it started: TERM, bounded wait, KILL.
mh_stop_pid() {
    local pid=$1 waited=0
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( waited < 100 )); do sleep 0.1; waited=$((waited + 1)); done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Stop a process group (a pair started with setsid: its leader's pid is the group id) and
# everything in it: TERM, bounded wait for the leader, then KILL the group. Args: pgid [secs]
mh_stop_group() {
    local pgid=$1 secs=${2:-20} waited=0
    [[ -n $pgid ]] && kill -0 "$pgid" 2>/dev/null || return 0
    kill -TERM -- "-$pgid" 2>/dev/null || true
    while kill -0 "$pgid" 2>/dev/null && (( waited < secs * 10 )); do sleep 0.1; waited=$((waited + 1)); done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    wait "$pgid" 2>/dev/null || true
}

# Wait (bounded) until the processes PID... have exited; they are not signalled. Args: secs pid...
mh_wait_exit() {
    local secs=$1 waited=0 pid alive
    shift
    while (( waited < secs * 10 )); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        (( alive )) || return 0
        sleep 0.1
        waited=$((waited + 1))
    done
}
