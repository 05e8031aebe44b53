#!/usr/bin/env bash
# install_apptainer.sh: install a real Apptainer on Debian 12 (bookworm) amd64. Run as root.
#
# Bookworm ships no apptainer package. We download Debian sid's apptainer plus the sid
# libc6/libseccomp2/libsqlite3-0 it needs (glibc >= 2.38) through a private apt state
# directory (sid never enters the system's sources), unpack them with `dpkg -x` into a
# private prefix and point the two ELF executables (apptainer, starter) at the private
# ld.so with patchelf. The system glibc is never touched. Helpers (mksquashfs, squashfuse,
# newuidmap, ...) come from bookworm.
#
# Idempotent: with a working install it only re-applies the host settings and prints the
# version. Knobs (environment):
#   APPTAINER_PREFIX=/opt/apptainer          private prefix (absolute; baked into ELF headers)
#   APPTAINER_CACHE=$APPTAINER_PREFIX.cache  private apt state and downloaded .debs
#   APPTAINER_LINK=/usr/local/bin/apptainer  symlink to create ("" = none)
#   APPTAINER_SUITE=sid
#   APPTAINER_MIRROR   the Debian mirror (default: DEBIAN_MIRROR, else the one this machine's apt
#                      sources use for its own suite: provision/debian_mirror.sh)
#   APPTAINER_ROOT_SUBID=1  give root a subuid/subgid range (`build --fakeroot` as root needs it)
#   APPTAINER_FIX_FUSE=1    chmod 0666 /dev/fuse when root-only (non-root users mount SIFs with squashfuse)
#   APPTAINER_FORCE=0       1 = download and reinstall
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

readonly PREFIX=${APPTAINER_PREFIX:-/opt/apptainer}
readonly CACHE=${APPTAINER_CACHE:-${PREFIX%/}.cache}
readonly LINK=${APPTAINER_LINK-/usr/local/bin/apptainer}
readonly SUITE=${APPTAINER_SUITE:-sid}
MIRROR=${APPTAINER_MIRROR:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly ROOT_SUBID=${APPTAINER_ROOT_SUBID:-1}
readonly FIX_FUSE=${APPTAINER_FIX_FUSE:-1}
readonly FORCE=${APPTAINER_FORCE:-0}
readonly SYS_PKGS=(squashfs-tools uidmap squashfuse fuse-overlayfs fuse2fs gocryptfs patchelf
                   ca-certificates debian-archive-keyring debootstrap)
readonly PRIV_PKGS=(apptainer libc6 libseccomp2 libsqlite3-0)
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly ARCHLIB=usr/lib/x86_64-linux-gnu
readonly APPT="$PREFIX/usr/bin/apptainer"
readonly APT_NET=(-o Acquire::Retries=3 -o Acquire::http::Timeout=30 -o DPkg::Lock::Timeout=300)
export DEBIAN_FRONTEND=noninteractive

log() { echo "[install_apptainer] $*" >&2; }
die() { echo "[install_apptainer] ERROR: $*" >&2; exit 2; }

preflight() {
  [[ "$(id -u)" == 0 ]] || die "must run as root: sudo $0"
  [[ "$(dpkg --print-architecture)" == amd64 ]] || die "only amd64 is supported"
  [[ "$PREFIX" == /* ]] || die "APPTAINER_PREFIX must be an absolute path, got '$PREFIX'"
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
  [[ "$codename" == bookworm ]] || log "warning: tested on bookworm, this is $codename"
}

install_system_packages() {
  local missing=() p
  for p in "${SYS_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing bookworm packages: ${missing[*]}"
  timeout 600 apt-get "${APT_NET[@]}" update -qq || log "warning: apt-get update had errors"
  timeout 900 apt-get "${APT_NET[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

installed_ok() {
  [[ -x "$APPT" && -f "$PREFIX/.install-stamp" ]] && "$APPT" --version >/dev/null 2>&1
}

download_debs() {  # $1 = dir for the .debs
  local debdir=$1 aptdir="$CACHE/apt" p codename
  if [[ -z "$MIRROR" ]]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    MIRROR=$(bash "$HERE/debian_mirror.sh" "$codename") || die "no Debian mirror: set APPTAINER_MIRROR or DEBIAN_MIRROR"
  fi
  mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$debdir"
  echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$aptdir/sources.list"
  : >"$aptdir/empty-prefs"
  local opts=(-o Dir::Etc::SourceList="$aptdir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o Dir::Etc::Preferences="$aptdir/empty-prefs" -o Dir::Etc::PreferencesParts=/dev/null
              -o Dir::State::Lists="$aptdir/lists" -o Dir::Cache="$aptdir/cache"
              -o APT::Sandbox::User=root "${APT_NET[@]}")
  log "updating private $SUITE package lists in $aptdir"
  timeout 600 apt-get "${opts[@]}" update -qq
  rm -f "$debdir"/*.deb
  log "downloading ${PRIV_PKGS[*]} from $SUITE"
  (cd "$debdir" && timeout 600 apt-get "${opts[@]}" download "${PRIV_PKGS[@]}" >/dev/null)
  for p in "${PRIV_PKGS[@]}"; do
    compgen -G "$debdir/${p}_*.deb" >/dev/null || die "download of $p from $SUITE failed; check $MIRROR"
  done
  rm -rf "$aptdir/lists" "$aptdir/cache"  # sid indexes (~25 MB) are not needed any more
}

STAGE=""
cleanup() { [[ -n "$STAGE" ]] && rm -rf "$STAGE"; return 0; }

unpack_and_patch() {  # $1 = dir with the .debs
  local debdir=$1 d f
  mkdir -p "$(dirname "$PREFIX")"
  STAGE=$(mktemp -d "${PREFIX%/}.stage.XXXXXX")
  for d in "$debdir"/*.deb; do dpkg -x "$d" "$STAGE"; done
  rm -rf "$STAGE/usr/share/doc" "$STAGE/usr/share/man" "$STAGE/usr/share/lintian" "$STAGE/etc/ld.so.conf.d"
  local ld="$PREFIX/$ARCHLIB/ld-linux-x86-64.so.2"
  for f in "$STAGE/usr/bin/apptainer" "$STAGE/$ARCHLIB"/apptainer/bin/*; do
    if [[ ! -f "$f" ]] || ! head -c4 "$f" | grep -q ELF; then continue; fi
    # --force-rpath: DT_RPATH (not RUNPATH) so the private glibc wins for every dependency
    patchelf --set-interpreter "$ld" --force-rpath --set-rpath "$PREFIX/$ARCHLIB" "$f"
    log "patched $(basename "$f") -> $ld"
  done
  # apptainer derives prefix=$PREFIX/usr from its path, starter prefix=$PREFIX/usr/lib
  # (Debian's libexecdir): make both views resolve to the same etc/ and var/.
  ln -sfn ../etc "$STAGE/usr/etc"
  ln -sfn ../var "$STAGE/usr/var"
  ln -sfn ../../etc "$STAGE/usr/lib/etc"
  ln -sfn ../../var "$STAGE/usr/lib/var"
  ln -sfn . "$STAGE/usr/lib/lib"
  local conf="$STAGE/etc/apptainer/apptainer.conf"
  {
    echo
    echo "# ---- added by mlebench-hpc install_apptainer.sh"
    echo "cni configuration path = $PREFIX/etc/apptainer/network"  # not relocated by apptainer
    echo "cni plugin path = /usr/lib/cni"
  } >>"$conf"
  if [[ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]]; then
    sed -i 's/^systemd cgroups = yes/systemd cgroups = no/' "$conf"
  fi
  (cd "$debdir" && ls -- *.deb) | tr '\n' ' ' >"$STAGE/.install-stamp"
  rm -rf "${PREFIX%/}.old"
  [[ -e "$PREFIX" ]] && mv "$PREFIX" "${PREFIX%/}.old"
  mv "$STAGE" "$PREFIX"
  STAGE=""
  rm -rf "${PREFIX%/}.old"
  chmod 755 "$PREFIX"
}

# Root's default "full" capability set fails when the bounding set lacks one (sandboxes
# without CAP_SYS_RESOURCE): keep exactly the capabilities this host grants.
configure_capabilities() {
  local conf="$PREFIX/etc/apptainer/apptainer.conf" last bnd full caps="" i
  last=$(cat /proc/sys/kernel/cap_last_cap)
  bnd=$((16#$(awk '/^CapBnd/{print $2}' /proc/self/status)))
  full=$(((1 << (last + 1)) - 1))
  ((bnd == full)) && return 0
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE)
  for i in "${!names[@]}"; do
    if ((i <= last && ((bnd >> i) & 1) == 1)); then caps+=",CAP_${names[$i]}"; fi
  done
  log "capability bounding set is not full; root containers get: ${caps#,}"
  sed -i 's/^root default capabilities = .*/root default capabilities = file/' "$conf"
  "$APPT" capability add --user root "${caps#,}" >/dev/null 2>&1
}

configure_host() {
  local f start
  if [[ "$ROOT_SUBID" == 1 ]]; then
    for f in /etc/subuid /etc/subgid; do
      touch "$f"
      grep -q '^root:' "$f" && continue
      start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
      echo "root:$start:65536" >>"$f"
      log "added root:$start:65536 to $f"
    done
  fi
  if [[ "$FIX_FUSE" == 1 && -c /dev/fuse && "$(stat -c %a /dev/fuse)" != 666 ]]; then
    chmod 0666 /dev/fuse
    log "chmod 0666 /dev/fuse (Debian's default; not persistent across reboots)"
  fi
  [[ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 1)" != 0 ]] \
    || log "warning: user.max_user_namespaces=0, non-root use will fail (sysctl -w user.max_user_namespaces=15000)"
  if [[ -n "$LINK" ]]; then
    mkdir -p "$(dirname "$LINK")"
    ln -sfn "$APPT" "$LINK"
  fi
}

main() {
  preflight
  trap cleanup EXIT
  install_system_packages
  if [[ "$FORCE" == 1 ]] || ! installed_ok; then
    download_debs "$CACHE/debs"
    unpack_and_patch "$CACHE/debs"
  fi
  configure_capabilities
  configure_host
  "$APPT" --version
}

main "$@"
