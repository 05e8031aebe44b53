#!/usr/bin/env bash
# Build the integrity checker (environment/integrity_check.c) as a static binary: `make install`.
# usage: bash scripts_hpc/build_checker.sh [--out FILE] [--python PY]
#   --out     where to put it (default: .venv/libexec/mlebench-hpc/integrity-check of this checkout)
#   --python  the venv's python, for the zig fallback (default: .venv/bin/python)
# Static, so that nothing of an agent image (its loader, libc, shell) runs when the check runs in the
# agent's container. Tries `${CC:-cc} -static` (glibc's libc.a: Debian's libc6-dev, RHEL's
# glibc-static), then zig's C compiler from PyPI (package ziglang, installed into the venv when
# missing; its first build takes about a minute). Writes FILE.source: the sha256 of the source it was
# built from, which every job compares with its checkout's before it trusts the binary.
set -euo pipefail
# shellcheck source=scripts_hpc/lib/log.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/log.sh"  # mh_help, mh_usage_error, MLEBENCH_HPC_DEBUG
mh_help "$@"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/.venv/libexec/mlebench-hpc/integrity-check
py=$root/.venv/bin/python
while (($#)); do
    case $1 in
        --out) out=${2:?--out needs a file}; shift 2 ;;
        --python) py=${2:?--python needs an interpreter}; shift 2 ;;
        *) mh_usage_error "unknown option '$1'" ;;
    esac
done
src=$root/environment/integrity_check.c
log() { printf '[mlebench-hpc %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'mlebench-hpc: error: %s\n' "$*" >&2; exit 2; }

[[ -f $src ]] || die "$src is missing: restore the checkout"
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp" "$tmp.log"' EXIT

# True when FILE is an ELF executable without a program interpreter (PT_INTERP): no dynamic loader,
# no shared library of the container is ever loaded into it.
is_static() {
    "$py" - "$1" <<'EOF'
import struct, sys
data = open(sys.argv[1], "rb").read()
if data[:4] != b"\x7fELF" or data[4] != 2:
    sys.exit(1)
end = "<" if data[5] == 1 else ">"
phoff, = struct.unpack_from(end + "Q", data, 0x20)
phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
types = [struct.unpack_from(end + "I", data, phoff + i * phentsize)[0] for i in range(phnum)]
sys.exit(0 if 3 not in types else 1)
EOF
}

built=""
cc=${CC:-cc}
if command -v "$cc" >/dev/null 2>&1 &&
    "$cc" -static -O2 -o "$tmp" "$src" 2>"$tmp.log" && is_static "$tmp"; then
    built="$cc -static"
else
    log "'$cc -static' cannot build a static binary here ($(tail -n1 "$tmp.log" 2>/dev/null || echo "no $cc")): trying zig's C compiler (PyPI ziglang)"
    [[ -x $py ]] || die "no static C toolchain and no venv at $py: run 'make install' (it installs the checker)"
    if ! "$py" -c 'import ziglang' 2>/dev/null; then
        log "installing ziglang into the venv (about 100 MB)"
        "$py" -m pip install -q ziglang >&2 || die "cannot install ziglang: install gcc with a static libc (glibc-static, libc6-dev) and run 'make install' again"
    fi
    target="$(uname -m)-linux-musl"
    "$py" -m ziglang cc -static -target "$target" -O2 -o "$tmp" "$src" 2>"$tmp.log" ||
        die "zig cc could not build $src: $(tail -n1 "$tmp.log")"
    is_static "$tmp" || die "zig built a dynamic binary from $src: report this"
    built="zig cc -target $target"
fi
rm -f "$tmp.log"
chmod 0755 "$tmp"
mv -f "$tmp" "$out"
sha256sum "$src" | cut -d' ' -f1 >"$out.source"
log "integrity checker built with $built: $out"
