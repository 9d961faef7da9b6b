# shellcheck shell=bash
# Shared helpers of the lab scripts. Source it; it sets -euo pipefail.
set -euo pipefail
LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
REPO_DIR="$(cd "$LAB_DIR/.." && pwd)"
# shellcheck source=lab/lab.env source-path=SCRIPTDIR
. "$LAB_DIR/lab.env"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$LAB_DIR/containers.conf}"
LAB_BUILD="${LAB_BUILD:-$LAB_DIR/build}"

_step=""
step() { _step="$*"; printf '==> [%s] %s: %s\n' "$(date +%H:%M:%S)" "${LAB_SCRIPT:-lab}" "$*"; }
info() { printf '    %s\n' "$*"; }
# die MESSAGE [HINT]: name the failed step, say what to do, exit 1
die() {
  printf '!!! %s failed in step "%s": %s\n' "${LAB_SCRIPT:-lab}" "${_step:-?}" "$1" >&2
  [ -n "${2:-}" ] && printf '!!! fix: %s\n' "$2" >&2
  exit 1
}
_on_err() {
  local rc=$?
  printf '!!! %s: step "%s" failed (exit %s, line %s)\n' "${LAB_SCRIPT:-lab}" "${_step:-?}" "$rc" "$1" >&2
  exit "$rc"
}
trap '_on_err $LINENO' ERR

require_root() {
  [ "$(id -u)" = 0 ] || die "the lab needs root (rootful podman, debootstrap)" "re-run as root or with sudo"
}
require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "command '$c' not found" "run: bash .ci/lab-deps.sh (installs podman, runc, debootstrap)"
  done
}

subnet_base() {  # 10.89.47.0/24 -> 10.89.47
  local net="${LAB_SUBNET%/*}" bits="${LAB_SUBNET#*/}"
  [ "$bits" = 24 ] || die "LAB_SUBNET=$LAB_SUBNET is not a /24" "use a /24 such as 10.89.47.0/24"
  echo "${net%.*}"
}
host_ip() {  # host_ip tmr-a -> 10.89.47.21
  local h entry
  for entry in $LAB_HOSTS; do
    h="${entry%%:*}"
    if [ "$h" = "$1" ]; then echo "$(subnet_base).${entry##*:}"; return 0; fi
  done
  die "unknown lab host '$1'" "LAB_HOSTS is: $LAB_HOSTS"
}
lab_vip() { echo "$(subnet_base).$LAB_VIP_OCTET"; }
lab_hostnames() { local e; for e in $LAB_HOSTS; do echo "${e%%:*}"; done; }
container_name() { echo "${LAB_PREFIX}$1"; }

# The image's content hash: the build inputs. Rebuild only when one of them changes.
image_inputs_hash() {
  cat "$LAB_DIR/build-image.sh" "$LAB_DIR/image-packages.txt" <(echo "$LAB_SUITE") \
    | sha256sum | cut -c1-12
}
image_ref() { echo "$LAB_IMAGE:$(image_inputs_hash)"; }

host_mac() {  # host_mac 10.89.47.21 -> 02:74:6d:59:2f:15 (locally administered, unique per address)
  local b c d
  IFS=. read -r _ b c d <<< "$1"
  printf '02:74:6d:%02x:%02x:%02x\n' "$b" "$c" "$d"
}
