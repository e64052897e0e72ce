"""The README's SDK-only scripts against `enilab vpc serve`, both as a user runs them: two processes."""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def readme_script(marker: str = "runs this very block") -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing code written against the Tencent Cloud SDK"):]
    return re.search(re.escape(marker) + r"\):\n\n```python\n(.*?)```", section, re.S).group(1)


RESERVING = "runs this block too"


@pytest.fixture
def served_topology():
    proc = subprocess.Popen([sys.executable, "-m", "testbed.apps.cli", "vpc", "serve",
                             str(ROOT / "fixtures/topologies/default.yaml"), "--port", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("marker", ["runs this very block", RESERVING])
def test_the_readme_scripts_use_only_the_sdk_and_the_standard_library(marker):
    modules = {(n.module if isinstance(n, ast.ImportFrom) else a.name).split(".")[0]
               for n in ast.walk(ast.parse(readme_script(marker))) if isinstance(n, ast.Import | ast.ImportFrom)
               for a in n.names}
    assert modules - set(sys.stdlib_module_names) == {"tencentcloud"}


def run_script(served_topology, marker: str) -> list[str]:
    env = {**os.environ, "VPC_ENDPOINT": served_topology["endpoint"],
           "TENCENTCLOUD_SECRET_ID": served_topology["secret_id"],
           "TENCENTCLOUD_SECRET_KEY": served_topology["secret_key"]}
    done = subprocess.run([sys.executable, "-c", readme_script(marker)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_readme_script_fills_enis_to_the_quotas_and_gets_the_quota_errors(served_topology):
    lines = run_script(served_topology, "runs this very block")
    assert len(lines) == 4
    assert all(re.fullmatch(r"eni-[0-9a-f]{8} full: LimitExceeded\.EniPrivateIpLimit", line) for line in lines[:3])
    assert lines[3] == "attach refused: LimitExceeded.NetworkInterfaceLimitExceeded"


def test_the_readme_script_reserves_in_place_describes_and_deletes(served_topology):
    assert run_script(served_topology, RESERVING) == [
        "reserved: 10.0.1.2, 10.0.1.3",
        "10.0.1.5 on its ENI: Bind",
        "10.0.1.5 unassigned: UnBind",
        "10.0.9.9 refused: InvalidParameterValue.AddressIpNotInVpc",
        "10.0.1.5 refused: InvalidParameterValue.AddressIpNotAvailable",
        "deleted 3 left 0",
    ]


def test_serving_a_bad_topology_is_a_clear_error(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("cluster: {subnets: [{id: a, cidr: nonsense}]}\n")
    done = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "vpc", "serve", str(bad), "--port", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "cidr" in done.stderr


def test_serving_on_a_port_in_use_is_a_clear_error(served_topology):
    port = served_topology["endpoint"].rsplit(":", 1)[1]
    done = subprocess.run([sys.executable, "-m", "testbed.apps.cli", "vpc", "serve",
                           str(ROOT / "fixtures/topologies/default.yaml"), "--port", port],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--port" in done.stderr


def test_the_agent_with_cloud_tencent_needs_an_endpoint_and_credentials(tmp_path):
    base = [sys.executable, "-m", "eni_core.agent", "--node", "n", "--state", str(tmp_path), "--listen",
            str(tmp_path / "s"), "--subnet", "subnet-a", "--max-enis", "1", "--ips-per-eni", "1", "--cloud", "tencent"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENCENTCLOUD_")}
    for extra, said in (([], "--endpoint"), (["--endpoint", "http://127.0.0.1:1"], "TENCENTCLOUD_SECRET_ID")):
        done = subprocess.run(base + extra, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
