"""The documentation as a newcomer meets it: every command block of README.md and docs/*.md runs, in order,
exactly as written; links stay inside the repository; the example scenario of the format page is valid.

Blocks run from a scratch folder that holds what a checkout holds for them (`.venv` and `fixtures/`, linked),
with a private registry of clusters (ENILAB_CLUSTERS_DIR) so their `enilab up default` never meets another
cluster; run records stay shared, so `enilab clean` in a block removes only dead runs' leftovers. As root,
`sudo` in front of a command is a no-op and is dropped (this machine has no sudo). A block preceded by
`<!-- skip-test: REASON -->` is not run; such skips are few and give their reason.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

from eni_core import netns
from testbed.world import runs
from testbed.world.scenario import parse_scenario
from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "shell"}
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.M | re.S)
SKIP = re.compile(r"<!--\s*skip-test:(?P<why>.*?)-->", re.S)
MAX_SKIPS = 6  # servers that run until stopped, the real cloud, other machines' runtimes: few, each with its reason
BLOCK_TIMEOUT = 600


@dataclass
class Block:
    lang: str
    body: str
    line: int
    skip: str | None


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, each with the skip reason written right before it.

    >>> [(b.lang, b.skip) for b in blocks("<!-- skip-test: slow -->\\n```sh\\nsleep 1\\n```\\n```yaml\\na: 1\\n```\\n")]
    [('sh', 'slow'), ('yaml', None)]
    """
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip()
        marker = SKIP.fullmatch(before[before.rfind("<!--"):]) if before.endswith("-->") else None
        out.append(Block(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1,
                         " ".join(marker["why"].split()) if marker else None))
    return out


def _shell_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path.read_text()) if b.lang in SHELL]


def _needs_root(path: Path) -> bool:
    return any(re.search(r"\bsudo\b", b.body) for b in _shell_blocks(path) if b.skip is None)


def _marks(path: Path) -> list[pytest.MarkDecorator]:
    """netns where a block needs root (`sudo`); host_root too where one runs podman, which runs as root here."""
    runs = " ".join(b.body for b in _shell_blocks(path) if b.skip is None)
    podman = [pytest.mark.host_root("a block runs podman as root")] if re.search(r"\bpodman\b", runs) else []
    return [pytest.mark.netns, *podman] if _needs_root(path) else []


def test_skip_markers_are_few_give_reasons_and_each_skips_a_block():
    skips = []
    for path in DOCS:
        text = path.read_text()
        marked = [b for b in blocks(text) if b.skip is not None]
        assert len(marked) == len(SKIP.findall(text)), f"{path.name}: a skip-test marker is not right before a block"
        skips += [(path.name, b.line, b.skip) for b in marked]
    assert len(skips) <= MAX_SKIPS, f"too many skipped blocks: {skips}"
    assert all(len(why.split()) >= 3 for _, _, why in skips), f"a skip needs its reason: {skips}"


def test_the_block_finder_sees_a_skip_only_right_before_its_block():
    text = "<!-- skip-test: too slow to run -->\n\nsome prose\n```sh\necho hi\n```\n"
    assert [b.skip for b in blocks(text)] == [None]


def _run_block(block: Block, path: Path, cwd: Path, env: dict[str, str], started: list[int]) -> None:
    body = re.sub(r"\bsudo\s+", "", block.body) if os.geteuid() == 0 else block.body
    proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", body], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started.append(proc.pid)
    out, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
    assert proc.returncode == 0, (f"{path.name}, block at line {block.line} exited {proc.returncode}:\n"
                                  f"{block.body}\n--- output ---\n{out[-4000:]}")


def _prefixes() -> set[str]:
    return {m.group(0) for m in map(runs.PREFIX_RE.match, netns.list_names()) if m}


def _tidy(cwd: Path, env: dict[str, str], started: list[int], before: set[str]) -> list[str]:
    """Take down what a failed block left up; return the namespaces of runs that began during the blocks
    and ended without removing them (a leak), after removing them. Live runs are never touched."""
    clusters = Path(env["ENILAB_CLUSTERS_DIR"])
    for folder in sorted(clusters.glob("*")) if clusters.exists() else []:
        subprocess.run([str(cwd / ".venv" / "bin" / "enilab"), "down", "--name", folder.name], env=env,
                       capture_output=True, timeout=120)
    leaked = []
    for name in netns.list_names():  # the namespaces the docs make by hand are named after their shell's pid
        if name.startswith("cni-demo-") and any(name.endswith(f"-{pid}") for pid in started):
            netns.delete(name)
            leaked.append(name)
    def dead_runs() -> dict[str, runs.Run]:
        found = {p: runs.Run.load(p) for p in _prefixes() - before}
        return {p: run for p, run in found.items() if run is not None and not runs.owner_alive(run.info)}

    dead = dead_runs()
    if dead:  # another process's run may be half-way through its own teardown: give it a moment
        time.sleep(2)
        dead = {p: run for p, run in dead_runs().items() if p in dead}
    for _, run in sorted(dead.items()):
        leaked += run.remove()
    return leaked


@pytest.mark.parametrize("path", [pytest.param(p, marks=_marks(p), id=p.name) for p in DOCS if _shell_blocks(p)])
def test_every_command_block_runs_in_order_as_written(path: Path, tmp_path: Path):
    cwd = tmp_path / "checkout"
    cwd.mkdir()
    (cwd / ".venv").symlink_to(Path(sys.prefix))
    (cwd / "fixtures").symlink_to(ROOT / "fixtures")
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {**os.environ, "ENILAB_CLUSTERS_DIR": str(tmp_path / "clusters"),
           "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)}
    env.pop("VIRTUAL_ENV", None)
    to_run = [b for b in _shell_blocks(path) if b.skip is None]
    assert to_run, f"{path.name}: every command block is skipped"
    started: list[int] = []
    before = _prefixes()
    try:
        for block in to_run:
            _run_block(block, path, cwd, env, started)
    finally:
        left = _tidy(cwd, env, started, before)
    assert not left, f"{path.name}: the commands left namespaces behind: {left}"


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_links_point_inside_the_repository_and_exist(path: Path):
    for m in LINK.finditer(path.read_text()):
        target = m["target"].split("#")[0]
        if not target or re.match(r"^[a-z]+://", target):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
        assert resolved.exists(), f"{path.name}: {target} does not exist"
    assert "shared/" not in path.read_text(), f"{path.name} mentions a folder outside the repository"


def test_the_format_pages_example_is_a_valid_scenario():
    examples = [yaml.safe_load(b.body) for b in blocks((ROOT / "docs" / "scenario-format.md").read_text())
                if b.lang == "yaml"]
    assert examples
    schema = json.loads((ROOT / "docs" / "schema" / "scenario.schema.json").read_text())
    for doc in examples:
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        assert parse_scenario(doc).steps


def _schema(name: str) -> dict:
    return json.loads((ROOT / "docs" / "schema" / f"{name}.schema.json").read_text())


def _named(page: str) -> set[str]:
    """Every word the page writes in backticks."""
    return set(re.findall(r"`([^`\s]+)`", (ROOT / "docs" / page).read_text()))


def test_the_format_page_describes_every_op_and_field_of_the_scenario_schema():
    schema = _schema("scenario")
    defs = schema["$defs"]
    ops = re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "scenario-format.md").read_text().split("## Steps")[1], re.M)
    assert ops == defs["step"]["properties"]["op"]["enum"]
    named = _named("scenario-format.md")
    for where in (schema, defs["cluster"], defs["pool"], defs["static"], defs["subnet"], defs["node"], defs["faults"],
                  *(defs[f"op_{op}"] for op in ops)):
        missing = set(where["properties"]) - named
        assert not missing, f"docs/scenario-format.md does not describe {sorted(missing)}"


def test_the_contract_page_describes_every_field_of_the_state_schema():
    schema = _schema("state")
    defs = schema["$defs"]
    named = _named("json-contract.md")
    for where in (schema, *(defs[d] for d in ("step", "node", "eni", "pod", "claim", "probe", "routing", "subnet")),
                  *(defs[d] for d in defs if d.startswith("event_"))):
        missing = set(where["properties"]) - named
        assert not missing, f"docs/json-contract.md does not describe {sorted(missing)}"


TOP = ("eni_core", "testbed", "tests", "fixtures", "labs", "ci", "docs")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_repository_path_the_page_names_exists(path: Path):
    named = set(re.findall(r"`([^`\s]+)`", path.read_text())) | {m["target"] for m in LINK.finditer(path.read_text())}
    paths = {n.rstrip("/") for n in named if "/" in n and n.split("/")[0] in TOP and not re.search(r"[<>*{]", n)}
    if path.name == "README.md":
        assert paths, "README.md names no path of the repository: is this test reading it right?"
    missing = sorted(p for p in paths if not (ROOT / p.split("::")[0]).exists())
    assert not missing, f"{path.name} names paths that do not exist: {missing}"
