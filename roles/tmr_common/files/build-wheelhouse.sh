#!/usr/bin/env bash
# Build (or refresh) the wheelhouse of tmr-license-server and its dependencies on the controller.
#   build-wheelhouse.sh PYTHON SOURCE_DIR WHEELHOUSE_DIR
# The dependencies are exactly the versions pinned, with their sha256 hashes, in
# SOURCE_DIR/requirements/wheelhouse.txt (pip-compile --generate-hashes; see the operator guide):
# taken from WHEELHOUSE_DIR when it already holds them (no network: a redeploy is reproducible
# offline), else downloaded from the package index, and checked against the hashes either way.
# The project is built from a clean copy of its sources with SOURCE_DATE_EPOCH fixed, so the
# same sources give the same wheel bytes. The wheelhouse gets a requirements.txt (the pinned
# hashes plus the project wheel's own hash) that the hosts install with pip --require-hashes;
# the build checks on the controller that this file is complete (a dependency added to
# pyproject.toml but not to the constraints fails here, not on a host).
# A rebuild that changes nothing leaves the wheelhouse untouched. Also writes WHEELHOUSE_DIR.tar
# (reproducible) for copying. Prints "WHEELHOUSE CHANGED" or "WHEELHOUSE UNCHANGED" last
# (Ansible's changed_when).
set -euo pipefail
py="$1" src="$2" dest="$3"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}" PIP_DISABLE_PIP_VERSION_CHECK=1
# a site-wide pip constraint (pip.conf) must not mix into the hash-checked set
export PIP_CONSTRAINT=""
req="$src/requirements/wheelhouse.txt"
[ -f "$src/pyproject.toml" ] || { echo "no pyproject.toml in $src" >&2; exit 2; }
[ -f "$req" ] || { echo "no constraints file $req (pip-compile --generate-hashes)" >&2; exit 2; }
mkdir -p "$dest"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/out"
# the dependencies: pinned and hashed; offline from the wheelhouse when it has them all
if ! "$py" -m pip download -q --no-index --find-links "$dest" --only-binary=:all: \
    --require-hashes -r "$req" -d "$tmp/out" >/dev/null 2>&1; then
  echo "dependencies not all in $dest: downloading the pinned versions" >&2
  rm -f "$tmp/out"/*
  "$py" -m pip download -q --only-binary=:all: --require-hashes -r "$req" -d "$tmp/out" >&2
fi
# a clean copy: no stale build/ or egg-info from the working tree can leak into the wheel
for f in pyproject.toml setup.cfg setup.py README.md LICENSE MANIFEST.in; do
  [ -e "$src/$f" ] && cp -p "$src/$f" "$tmp/src/"
done
tar -C "$src" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' -cf - services | tar -C "$tmp/src" -xf -
# the build backend (setuptools, wheel): pinned and hashed in requirements/build.txt, kept in
# WHEELHOUSE_DIR-build-deps (not shipped to the hosts) so that a rebuild needs no index either
breq="$src/requirements/build.txt" bdeps="$dest-build-deps"
[ -f "$breq" ] || { echo "no build constraints file $breq" >&2; exit 2; }
mkdir -p "$bdeps"
if ! "$py" -m pip download -q --no-index --find-links "$bdeps" --only-binary=:all: \
    --require-hashes -r "$breq" -d "$tmp/bdeps" >/dev/null 2>&1; then
  "$py" -m pip download -q --only-binary=:all: --require-hashes -r "$breq" -d "$bdeps" >&2
fi
PIP_NO_INDEX=1 PIP_FIND_LINKS="$bdeps" "$py" -m pip wheel -q --no-deps -w "$tmp/out" "$tmp/src" >&2
own="$(ls "$tmp/out"/tmr_license_server-*.whl)"
version="$(basename "$own" | cut -d- -f2)"
{
  echo "# Installed on the hosts with: pip install --no-index --find-links . --require-hashes -r requirements.txt"
  echo "# The dependencies from requirements/wheelhouse.txt, then the project wheel built with them."
  grep -v '^#' "$req"
  echo "tmr-license-server==$version \\"
  echo "    --hash=sha256:$(sha256sum "$own" | cut -d' ' -f1)"
} > "$tmp/out/requirements.txt"
# complete and consistent: what a host will install, resolved here from these files only
"$py" -m pip install -q --dry-run --ignore-installed --no-index --find-links "$tmp/out" \
  --only-binary=:all: --require-hashes -r "$tmp/out/requirements.txt" >&2
changed=0
for w in "$tmp/out"/*.whl "$tmp/out/requirements.txt"; do
  b="$(basename "$w")"
  if [ -f "$dest/$b" ] && cmp -s "$w" "$dest/$b"; then continue; fi
  cp "$w" "$dest/$b"; changed=1; echo "updated $b" >&2
done
# wheels of versions no longer pinned leave the wheelhouse
for w in "$dest"/*.whl; do
  [ -e "$w" ] || continue
  b="$(basename "$w")"
  [ -f "$tmp/out/$b" ] || { rm -f "$w"; changed=1; echo "removed $b" >&2; }
done
(cd "$dest" && sha256sum -- *.whl requirements.txt | sort -k2) > "$tmp/SHA256SUMS"
if ! cmp -s "$tmp/SHA256SUMS" "$dest/SHA256SUMS" 2>/dev/null; then cp "$tmp/SHA256SUMS" "$dest/SHA256SUMS"; changed=1; fi
# one reproducible archive of the wheelhouse: a single file to copy to every host
if [ "$changed" = 1 ] || [ ! -f "$dest.tar" ]; then
  tar -C "$dest" --sort=name --mtime=@"$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
      -cf "$tmp/wheelhouse.tar" .
  cmp -s "$tmp/wheelhouse.tar" "$dest.tar" 2>/dev/null || { cp "$tmp/wheelhouse.tar" "$dest.tar"; changed=1; }
fi
if [ "$changed" = 1 ]; then echo "WHEELHOUSE CHANGED"; else echo "WHEELHOUSE UNCHANGED"; fi
