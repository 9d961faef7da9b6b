#!/usr/bin/env bash
# ansible-test sanity on the collection as an operator installs it (make collection-sanity).
#   collection-sanity.sh VENV TARBALL [ansible-test sanity options, e.g. --test yamllint]
# ansible-test needs the collection at .../ansible_collections/tmr/license_server: the tarball is
# installed into a fresh temporary tree and tested there, so what is checked is exactly the
# artifact (no tests/, lab/, .venv of the checkout). Runs on the controller's Python 3.11
# without containers. ansible-test gives each sanity test its own virtualenv, bootstrapped with
# a get-pip script it downloads from ci-files.testing.ansible.com; that host may be unreachable,
# so a stand-in is put in the cache instead: it runs the pip wheel that `pip download` fetched
# from the package index. The virtualenvs and the stand-in are kept under build/ansible-test-home
# (HOME for ansible-test), so later runs need no network.
set -euo pipefail
venv="$1" tarball="$2"; shift 2
repo="$(cd "$(dirname "$0")/.." && pwd)"
home="$repo/build/ansible-test-home"
# a site-wide pip constraint (pip.conf) must not fight ansible-test's own pins
export PIP_CONSTRAINT=""
pip_version="$("$venv/bin/python" - <<'EOF'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11", path="/usr/bin/python3"))["pip"])
EOF
)"
cache="$home/.ansible/test/cache"
shim="$cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$shim" ]; then
  mkdir -p "$cache"
  "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: "pip==$pip_version" -d "$cache"
  cat > "$shim" <<EOF
# Stand-in for get-pip.py $pip_version (written by .ci/collection-sanity.sh): installs pip and the
# packages named on the command line with pip run from its wheel, as get-pip.py does.
import os, runpy, sys
wheel = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$pip_version-py3-none-any.whl")
sys.path.insert(0, wheel)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.argv = ["pip", "install", "--upgrade", "--force-reinstall", *args, wheel]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
EOF
fi
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
"$venv/bin/ansible-galaxy" collection install --offline -p "$tree" "$tarball" >/dev/null
cd "$tree/ansible_collections/tmr/license_server"
start=$(date +%s)
# --python 3.11: the controller's Python (the roles run no Python modules of their own)
HOME="$home" PATH="$venv/bin:$PATH" "$venv/bin/ansible-test" sanity --python 3.11 --color no "$@"
echo "==> ansible-test sanity passed on $(basename "$tarball") in $(( $(date +%s) - start )) s"
