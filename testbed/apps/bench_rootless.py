"""Rootless figures beside root's in `enilab bench bringup`: the same bring-up, once more on the path a normal
user takes (a user namespace of its own, eni_core/userns.py), measured in a child process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from eni_core import userns

__all__ = ["FIGURES", "beside", "rootless_bringup"]

# what the rootless run reports beside root's (the builders are root's business: the kernel work is the same)
FIGURES = ("pods", "running", "verified", "reach_sample", "reachable", "setup_s", "cpu_ms_per_pod",
           "wire_ms_per_pod", "teardown_s", "teardown_ms_per_pod", "slab_kb_per_pod", "peak_rss_mb")
RATIOS = ("cpu_ms_per_pod", "wire_ms_per_pod", "teardown_ms_per_pod")


def rootless_bringup(nodes: int, pods_per_node: int, timeout: float = 1800) -> dict[str, Any]:
    """`enilab bench bringup --compare none` in a child with ENILAB_ROOTLESS=1: its figures; else
    `unavailable` (the kernel gives no user namespace: exit 2) or `error` (it failed), saying why."""
    argv = [sys.executable, "-m", "testbed.apps.cli", "bench", "bringup", "--nodes", str(nodes),
            "--pods-per-node", str(pods_per_node), "--compare", "none", "--json"]
    done = subprocess.run(argv, env={**os.environ, "ENILAB_ROOTLESS": "1"}, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"unavailable" if done.returncode == 2 else "error":
                lines[-1] if lines else f"the rootless run exited {done.returncode}"}
    figures = json.loads(done.stdout)
    return {key: figures[key] for key in FIGURES}


def beside(result: dict[str, Any], nodes: int, pods_per_node: int) -> dict[str, Any]:
    """`result`, a bring-up measured in this process, saying where it ran (`namespaces`: root, or rootless
    when this process is in a user namespace already) and, as root, with the rootless run's figures and
    their ratios to root's (`rootless`). A rootless run that failed or did not verify every pod misses the
    target; one the kernel does not allow only says so."""
    if userns.inside():
        return {**result, "namespaces": "rootless"}
    rootless = rootless_bringup(nodes, pods_per_node)
    for key in RATIOS:
        if result.get(key) and key in rootless:
            rootless[f"{key.removesuffix('_per_pod')}_over_root"] = round(rootless[key] / result[key], 2)
    ok = "unavailable" in rootless or ("error" not in rootless and rootless["verified"] == rootless["pods"]
                                       and rootless["reachable"] == rootless["reach_sample"])
    return {**result, "namespaces": "root", "rootless": rootless, "within_target": result["within_target"] and ok}
