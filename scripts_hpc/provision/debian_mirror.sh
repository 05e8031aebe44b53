#!/usr/bin/env bash
# debian_mirror.sh [SUITE]: print the Debian mirror URL this machine's apt uses for SUITE
# (default bookworm), for debootstrap and for the private apt state of install_apptainer.sh.
# DEBIAN_MIRROR wins; else the first http(s) URI of /etc/apt/sources.list.d/*.sources (deb822)
# or of a `deb` line in /etc/apt/sources.list and /etc/apt/sources.list.d/*.list that serves
# SUITE itself (not SUITE-security or SUITE-updates). No mirror name is written in the project:
# the build host's own configuration decides. Exit 2 with one line when there is none.
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

suite=${1:-bookworm}
if [[ -n ${DEBIAN_MIRROR:-} ]]; then
    echo "${DEBIAN_MIRROR%/}"
    exit 0
fi
APT_ETC=${MLEBENCH_APT_ETC:-/etc/apt}

from_deb822() {  # the URIs of stanzas whose Types has deb and whose Suites has SUITE
    awk -v want="$suite" '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ")) {
                n = split(uris, u, " "); for (i = 1; i <= n; i++) print u[i]
            }
            types = ""; suites = ""; uris = ""
        }
        /^[[:space:]]*#/ { next }
        /^[[:space:]]*$/ { flush(); next }
        { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
          if (key == "types") types = $0; else if (key == "suites") suites = $0; else if (key == "uris") uris = $0 }
        END { flush() }' "$@"
}

from_list() {  # deb [options] URI SUITE COMPONENT...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$@" | awk -v want="$suite" '$1 == "deb" && $3 == want { print $2 }'
}

shopt -s nullglob
candidates=()
sources=("$APT_ETC"/sources.list.d/*.sources)
lists=("$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list)
existing_lists=()
for f in "${lists[@]}"; do [[ -f $f ]] && existing_lists+=("$f"); done
((${#sources[@]} == 0)) || mapfile -t -O "${#candidates[@]}" candidates < <(from_deb822 "${sources[@]}")
((${#existing_lists[@]} == 0)) || mapfile -t -O "${#candidates[@]}" candidates < <(from_list "${existing_lists[@]}")
for uri in "${candidates[@]}"; do
    if [[ $uri == http://* || $uri == https://* ]]; then
        echo "${uri%/}"
        exit 0
    fi
done
echo "mlebench-hpc: error: no http(s) Debian mirror for '$suite' in $APT_ETC/sources.list{,.d/}: set DEBIAN_MIRROR=<mirror URL>" >&2
exit 2
