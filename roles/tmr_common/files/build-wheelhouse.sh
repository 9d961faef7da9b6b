#!/usr/bin/env bash
# Build (or refresh) the wheelhouse of tmr-license-server and its dependencies on the controller.
#   build-wheelhouse.sh PYTHON SOURCE_DIR WHEELHOUSE_DIR
# The project is built from a clean copy of its sources with SOURCE_DATE_EPOCH fixed, so the
# same sources give the same wheel bytes: a rebuild that changes nothing leaves the wheelhouse
# untouched. Also writes WHEELHOUSE_DIR.tar (reproducible) for copying. Prints "WHEELHOUSE CHANGED" or "WHEELHOUSE UNCHANGED" last (Ansible's changed_when).
# Dependencies already in the wheelhouse are reused (--find-links), so a refresh needs no index.
set -euo pipefail
py="$1" src="$2" dest="$3"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}" PIP_DISABLE_PIP_VERSION_CHECK=1
[ -f "$src/pyproject.toml" ] || { echo "no pyproject.toml in $src" >&2; exit 2; }
mkdir -p "$dest"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/out"
# a clean copy: no stale build/ or egg-info from the working tree can leak into the wheel
for f in pyproject.toml setup.cfg setup.py README.md LICENSE MANIFEST.in; do
  [ -e "$src/$f" ] && cp -p "$src/$f" "$tmp/src/"
done
tar -C "$src" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' -cf - services | tar -C "$tmp/src" -xf -
"$py" -m pip wheel -q --find-links "$dest" -w "$tmp/out" "$tmp/src" >&2
changed=0
for w in "$tmp/out"/*.whl; do
  b="$(basename "$w")"
  if [ -f "$dest/$b" ] && cmp -s "$w" "$dest/$b"; then continue; fi
  cp "$w" "$dest/$b"; changed=1; echo "updated $b" >&2
done
(cd "$dest" && sha256sum -- *.whl | sort -k2) > "$tmp/SHA256SUMS"
if ! cmp -s "$tmp/SHA256SUMS" "$dest/SHA256SUMS" 2>/dev/null; then cp "$tmp/SHA256SUMS" "$dest/SHA256SUMS"; changed=1; fi
# one reproducible archive of the wheelhouse: a single file to copy to every host
if [ "$changed" = 1 ] || [ ! -f "$dest.tar" ]; then
  tar -C "$dest" --sort=name --mtime=@"$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
      -cf "$tmp/wheelhouse.tar" .
  cmp -s "$tmp/wheelhouse.tar" "$dest.tar" 2>/dev/null || { cp "$tmp/wheelhouse.tar" "$dest.tar"; changed=1; }
fi
if [ "$changed" = 1 ]; then echo "WHEELHOUSE CHANGED"; else echo "WHEELHOUSE UNCHANGED"; fi
