#!/bin/sh
# Integrity self-check, run inside the agent container with exactly the agent's flags, just before
# the agent starts (scripts_hpc/lib.sh: mh_integrity_check). POSIX sh: it must run in any agent image.
# Prints one JSON object on stdout; exit 0 when "ok", 1 when a leak was seen, 2 on a usage error.
#
# usage: integrity_check.sh [-p DEV:INO:HOSTPATH]... [-m HOSTPATH]... [-e NAME]... [-c PATTERN]... [-k NAME]
#                          [-s PID:STARTTIME]...
#   -p  a host path the agent must not reach, with its host identity (stat -c %d:%i); the path is
#       "reachable" when it exists here with that same identity (the image may have its own /root).
#   -m  a host path no mount in this container may come from (a bind of it or of anything below it).
#   -e  an extra allowed environment variable name (the agent env file's names).
#   -c  a command-line substring of host processes that must be invisible (default run_grading_server).
#   -k  a canary variable the host set in its own environment: visible here means --cleanenv is off.
#   -s  PID:STARTTIME of a host process (field 22 of /proc/PID/stat): seen here means no --pid.
set -u

paths=""; mounts=""; allow=""; patterns=""; canaries=""; hostprocs=""
nl='
'
while getopts p:m:e:c:k:s: opt; do
    case $opt in
        p) paths="$paths$OPTARG$nl" ;;
        m) mounts="$mounts$OPTARG$nl" ;;
        e) allow="$allow $OPTARG" ;;
        c) patterns="$patterns$OPTARG$nl" ;;
        k) canaries="$canaries $OPTARG" ;;
        s) hostprocs="$hostprocs $OPTARG" ;;
        *) echo "usage: integrity_check.sh [-p DEV:INO:PATH] [-m PATH] [-e NAME] [-c PATTERN] [-k NAME]" >&2; exit 2 ;;
    esac
done
[ -n "$patterns" ] || patterns="run_grading_server$nl"
ok=true

json_str() { # a JSON string literal (paths and names: no control characters expected)
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037')"
}

identity() { # DEV:INO of a path, or :INO where stat is missing (busybox-less images)
    if command -v stat >/dev/null 2>&1; then
        stat -L -c %d:%i "$1" 2>/dev/null && return 0
    fi
    # shellcheck disable=SC2012 # ls is the fallback where stat is missing
    ino=$(ls -diL "$1" 2>/dev/null | awk '{print $1}')
    [ -n "$ino" ] && echo ":$ino"
}

# ---- host paths: reachable when present with the host's identity
paths_json=""
old_ifs=$IFS; IFS=$nl
for item in $paths; do
    IFS=$old_ifs
    want=${item%%:/*}; path=/${item#*:/}
    exists=false; reachable=false
    if [ -e "$path" ]; then
        exists=true
        got=$(identity "$path")
        case $got in
            :*) [ "${want#*:}" = "${got#:}" ] && reachable=true ;;
            *) [ "$want" = "$got" ] && reachable=true ;;
        esac
    fi
    [ "$reachable" = true ] && ok=false
    paths_json="$paths_json${paths_json:+,}{\"path\":$(json_str "$path"),\"exists\":$exists,\"reachable\":$reachable}"
    IFS=$nl
done
IFS=$old_ifs

# ---- mounts whose source (mountinfo field 4) is a forbidden host path or lies below one.
# The source is relative to its filesystem's root, so this sees host paths on the root filesystem
# (the common case for a single-node leak); -p covers the rest by identity.
bad_mounts=""
if [ -r /proc/self/mountinfo ] && [ -n "$mounts" ]; then
    while read -r _id _parent _dev root mnt _rest; do
        old_ifs=$IFS; IFS=$nl
        for m in $mounts; do
            case $root in
                "$m"|"$m"/*) bad_mounts="$bad_mounts${bad_mounts:+,}$(json_str "$root -> $mnt")"; ok=false; break ;;
            esac
        done
        IFS=$old_ifs
    done </proc/self/mountinfo
fi

# ---- environment: names only (never values), those not in the allow-list
base_allow="PATH HOME COMPETITION_ID TIME_LIMIT_SECS STEP_LIMIT GRADING_SERVER LANG TERM PS1 SHLVL PWD _ OLDPWD"
# apptainer itself sets these in every container
base_allow="$base_allow LD_LIBRARY_PATH PROMPT_COMMAND"
if command -v awk >/dev/null 2>&1; then
    names=$(awk 'BEGIN { for (k in ENVIRON) print k }')
else
    names=$(export -p | sed -n 's/^export \([A-Za-z_][A-Za-z0-9_]*\).*/\1/p')
fi
image_env=$(cat /.singularity.d/env/*.sh /environment 2>/dev/null)
unexpected=""
for name in $names; do
    case " $base_allow $allow " in *" $name "*) continue ;; esac
    case $name in APPTAINER_*|SINGULARITY_*|APPTAINERENV_*) continue ;; esac
    # set by the image's own definition (ENV / %environment), not passed from the host
    if printf '%s\n' "$image_env" | grep -Eq "(^|[^A-Za-z0-9_])$name="; then continue; fi
    unexpected="$unexpected${unexpected:+,}$(json_str "$name")"
    ok=false
done
canary_visible=false
for name in $canaries; do
    case $name in *[!A-Za-z0-9_]*|'') continue ;; esac
    eval "v=\${$name-}"
    # shellcheck disable=SC2154 # v is set by the eval above
    if [ -n "$v" ]; then canary_visible=true; ok=false; fi
done

# ---- processes: how many are visible, and whether any host process we must not see is
self=$$
visible=0; matching=0
for d in /proc/[0-9]*; do
    [ -d "$d" ] || continue
    visible=$((visible + 1))
    pid=${d#/proc/}
    [ "$pid" = "$self" ] && continue
    cmd=$(tr '\000' ' ' <"$d/cmdline" 2>/dev/null)
    old_ifs=$IFS; IFS=$nl
    for pat in $patterns; do
        case $cmd in *"$pat"*) matching=$((matching + 1)); break ;; esac
    done
    IFS=$old_ifs
done
[ "$matching" -eq 0 ] || ok=false
host_visible=false
for hp in $hostprocs; do
    hpid=${hp%%:*}; hstart=${hp#*:}
    [ -r "/proc/$hpid/stat" ] || continue
    # fields after the ")" that ends the command name: state is field 3, starttime field 22
    got=$(sed 's/.*) //' "/proc/$hpid/stat" 2>/dev/null | awk '{print $20}')
    if [ "$got" = "$hstart" ]; then host_visible=true; ok=false; fi
done
server_visible=false; [ "$matching" -gt 0 ] && server_visible=true

printf '{"ok":%s,"checker":"mlebench-hpc integrity_check.sh 1","uid":%s,' "$ok" "$(id -u 2>/dev/null || echo null)"
printf '"paths":[%s],"forbidden_mounts":[%s],' "$paths_json" "$bad_mounts"
printf '"unexpected_env":[%s],"canary_visible":%s,' "$unexpected" "$canary_visible"
printf '"processes":{"visible":%s,"grading_server_visible":%s,"matching":%s,"host_process_visible":%s}}\n' \
    "$visible" "$server_visible" "$matching" "$host_visible"
[ "$ok" = true ]
