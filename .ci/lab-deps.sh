#!/usr/bin/env bash
# Install what the podman lab and the molecule scenario need on a fresh Debian 12 machine (root).
# Idempotent: a second run only checks. Called by `make lab-deps` (lab/Makefile.inc) and CI.
#   VENV=.venv   the project virtualenv that receives the `lab` extra
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
VENV="${VENV:-.venv}"
step() { printf '\n==> [%s] lab-deps: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '\n!!! lab-deps: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (rootful podman, debootstrap); re-run with sudo"

# podman + runc (crun refuses hybrid cgroups here), debootstrap to build the image,
# openssh-client: Ansible reaches the lab hosts over SSH; make/git/python3-venv for the project, iproute2 to inspect the bridge.
pkgs=(podman runc debootstrap openssh-client python3-venv python3-dev make git iproute2 ca-certificates
      debian-archive-keyring uidmap slirp4netns fuse-overlayfs
      spin gcc  # spin + a C compiler: make test-model (model/replication.pml)
      shellcheck)  # ansible-test sanity's shellcheck test (make collection-sanity)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  apt-get update -q || die "apt-get update failed: check /etc/apt/sources.list and the mirror"
  apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || die "apt-get install failed for: ${missing[*]}"
else
  step "Debian packages present (${pkgs[*]})"
fi

step "virtualenv $VENV with the lab extra (ansible, ansible-lint, molecule, testinfra)"
test -x "$VENV/bin/python" || python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
stamp="$VENV/.lab-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev,lab]' || die "pip install -e '.[dev,lab]' failed (PyPI reachable?)"
  touch "$stamp"
else
  step "lab extra already installed (remove $stamp to force)"
fi
for t in ansible-playbook ansible-lint molecule; do
  test -x "$VENV/bin/$t" || die "$VENV/bin/$t missing after install"
done
"$VENV/bin/ansible-galaxy" collection list containers.podman >/dev/null 2>&1 \
  || die "collection containers.podman missing (it ships with the 'ansible' package)"
step "done: $(podman --version), $("$VENV/bin/ansible" --version | sed -n 1p)"
