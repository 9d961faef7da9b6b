"""The policy file on a real local cluster: `tmr ctl reload` and SIGHUP put it in force, a bad
file is refused whole, POLICY_DENIED reaches the SDK as PolicyDenied naming the rule, and the
standby enforces the same rules on the handles it takes over."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_helpers import LocalCluster, wait_for
from tmr.cli.main import main
from tmr.errors import PolicyDenied

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIRM, PRODUCT = 6000123, 42
RULES = f"""
[licenses."{FIRM}:{PRODUCT}"]
exclude = ["user:mallory"]
max = [{{ seats = 1, for = "user:bob" }}]
"""


def reload(
    cluster: LocalCluster, server: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    code = main(["ctl", "--socket", cluster.nodes[server]["ctl_socket"], "reload"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def digest(cluster: LocalCluster, server: str) -> str:
    return str(cluster.ctl(server, "status")["policy"]["digest"])


def events(cluster: LocalCluster, server: str, event: str) -> list[dict[str, Any]]:
    text = Path(cluster.nodes[server]["log"]).read_text(errors="replace")
    return [json.loads(x) for x in text.splitlines() if f'"event":"{event}"' in x]


def test_policy_reload_enforcement_and_failover(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = Path(cluster.info["dir"]) / "policy.toml"
    empty = digest(cluster, "tmr-a")
    assert digest(cluster, "tmr-b") == empty

    policy.write_text(RULES)
    code, reply, _ = reload(cluster, "tmr-a", capsys)
    assert code == 0 and reply["policy"]["licenses"] == 1
    ruled = reply["policy"]["digest"]
    assert ruled != empty and digest(cluster, "tmr-a") == ruled
    # the standby by SIGHUP (systemctl reload)
    os.kill(cluster.nodes["tmr-b"]["pid"], signal.SIGHUP)
    wait_for("tmr-b to load the policy", lambda: digest(cluster, "tmr-b") == ruled, 10)
    assert events(cluster, "tmr-b", "policy_loaded")[-1]["trigger"] == "SIGHUP"

    with cluster.client(user="mallory") as mallory, cluster.client(user="bob") as bob:
        with pytest.raises(PolicyDenied, match="exclude user:mallory"):
            mallory.checkout(FIRM, PRODUCT)
        held = bob.checkout(FIRM, PRODUCT)
        with pytest.raises(PolicyDenied, match=r"max 1 for user:bob"):
            bob.checkout(FIRM, PRODUCT)
        # the CLI's --user is what the rules see
        code = main(
            ["client", "--cluster", cluster.info["dir"], "--user", "mallory", "checkout",
             "--firm", str(FIRM), "--product", str(PRODUCT), "--hold", "0"]
        )  # fmt: skip
        assert code != 0
        assert "POLICY_DENIED" in capsys.readouterr().err
        denied = events(cluster, "tmr-a", "policy_denied")
        assert {e["rule"] for e in denied} == {"exclude user:mallory", "max 1 for user:bob"}

        # a bad file is refused whole: exit 1 naming the place, the rules in force stay
        policy.write_text(RULES + 'include = ["group:nobody"]\n')
        code, reply, _ = reload(cluster, "tmr-a", capsys)
        assert code == 1 and "no group 'nobody'" in reply["error"]
        assert digest(cluster, "tmr-a") == ruled
        with pytest.raises(PolicyDenied):
            bob.checkout(FIRM, PRODUCT)

        # failover: tmr-b enforces the max on bob's handle it adopted
        cluster.kill("tmr-a")
        cluster.promote("tmr-b", force=True)
        with pytest.raises(PolicyDenied, match=r"max 1 for user:bob"):
            bob.checkout(FIRM, PRODUCT)
        held.release()
        bob.checkout(FIRM, PRODUCT).release()
