"""Huge pages for a large simulation's heap (testbed/apps/heap.py): when the enilab command starts itself
again for them, when it must not (the user's own allocator or tunable, a switch set to 0, a machine that
has none, a caller's process), and that a real `enilab bench sim` gets them where the machine gives them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.apps import heap
from testbed.apps.cli import main
from testbed.errors import UsageError

CAN = {"thp": "madvise", "glibc": (2, 36)}


@pytest.mark.parametrize(("environ", "machine"), [
    ({heap.SWITCH: "0"}, CAN),
    ({heap.SWITCH: " 0 "}, CAN),
    ({heap.MARK: "huge-pages"}, CAN),  # started again already: never a loop
    ({"PYTHONMALLOC": "pymalloc_debug"}, CAN),  # the user's allocator
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, CAN),  # the user's own choice of the tunable
    ({}, {"thp": "never", "glibc": (2, 36)}),
    ({}, {"thp": None, "glibc": (2, 36)}),  # no transparent huge pages in this kernel
    ({}, {"thp": "madvise", "glibc": (2, 34)}),  # no such tunable before 2.35
    ({}, {"thp": "madvise", "glibc": None}),  # musl
], ids=["off", "off-spaced", "again", "pythonmalloc", "tunable", "never", "no-thp", "old-glibc", "musl"])
def test_the_process_is_kept_as_it_is(environ, machine):
    assert heap.huge_page_env(environ, **machine) is None


def test_the_new_environment_keeps_the_users_tunables_and_everything_else():
    env = heap.huge_page_env({"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2::"}, thp="always",
                             glibc=(2, 39))
    assert env == {"PATH": "/bin", heap.MARK: "huge-pages", "PYTHONMALLOC": "malloc",
                   "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"}
    assert heap.in_effect(env) and not heap.in_effect({"PYTHONMALLOC": "malloc"})


@pytest.mark.parametrize("value", ["yes", "2", "", "1" * 500])
def test_a_switch_neither_0_nor_1_is_a_usage_error_naming_it(value):
    with pytest.raises(UsageError, match=r"ENILAB_HUGE_PAGES=.*give 0 \(small pages\) or 1") as caught:
        heap.huge_page_env({heap.SWITCH: value}, **CAN)
    assert len(str(caught.value)) < 160


MODES = [(b"always [madvise] never\n", "madvise"), (b"[always] madvise never", "always"),
         (b"always madvise [never]", "never"), (b"", None), (b"\xff[madvise]", None)]


@pytest.mark.parametrize(("text", "mode"), MODES)
def test_the_kernels_mode_is_read_and_anything_else_is_none(tmp_path, text, mode):
    f = tmp_path / "enabled"
    f.write_bytes(text)
    assert heap.thp_mode(f) == mode
    assert heap.thp_mode(tmp_path / "absent") is None


@pytest.mark.parametrize(("answer", "version"), [("glibc 2.36", (2, 36)), ("glibc 2.41.9000", (2, 41)),
                                                 ("glibc 2", None), ("musl 1.2", None), (ValueError, None)])
def test_the_c_librarys_version(monkeypatch, answer, version):
    def confstr(name):
        if answer is ValueError:
            raise ValueError("unrecognized configuration name")
        return answer

    monkeypatch.setattr(os, "confstr", confstr)
    assert heap.glibc_version() == version


def test_a_start_that_fails_leaves_the_process_going_on_as_it_was(monkeypatch):
    calls = []

    def execve(path, argv, env):
        calls.append(env)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(heap, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(heap, "glibc_version", lambda: (2, 36))
    for name in (heap.SWITCH, heap.MARK, "PYTHONMALLOC", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python", "/venv/bin/enilab", "bench", "sim"])
    monkeypatch.setattr(sys, "argv", ["/venv/bin/enilab", "bench", "sim"])
    heap.reexec()
    assert calls and calls[0]["PYTHONMALLOC"] == "malloc"


@pytest.mark.parametrize(("orig_argv", "argv", "moved"), [
    (["/venv/bin/python", "/venv/bin/enilab", "bench", "sim"], ["/venv/bin/enilab", "bench", "sim"], True),
    (["python", "-m", "testbed.apps.cli", "tune"], ["/src/testbed/apps/cli.py", "tune"], True),
    # a notebook's kernel running `%run -m testbed.apps.cli bench sim`: started again, it would be a new
    # kernel (its state gone, the cell never answered), and the bench would never run
    (["python", "-m", "ipykernel_launcher", "-f", "/run/kernel-1.json"], ["/src/testbed/apps/cli.py", "bench", "sim"],
     False),
    # a script read from stdin: started again, the interpreter finds stdin empty and runs nothing
    (["python"], [""], False),
    (["python", "-", "bench", "sim"], ["-", "bench", "sim"], False),
], ids=["console-script", "python-m", "ipython-run", "stdin", "stdin-dash"])
def test_only_a_process_started_as_the_command_itself_is_started_again(monkeypatch, orig_argv, argv, moved):
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: calls.append(args))
    monkeypatch.setattr(heap, "thp_mode", lambda: "madvise")
    monkeypatch.setattr(heap, "glibc_version", lambda: (2, 36))
    for name in (heap.SWITCH, heap.MARK, "PYTHONMALLOC", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", argv)
    heap.reexec()
    assert calls == ([orig_argv] if moved else [])


def test_a_callers_process_is_never_started_again(monkeypatch, capsys):
    """A test runner or a notebook that calls `main` keeps its process: only the program itself moves."""
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("a caller's process was replaced"))
    for name in (heap.SWITCH, heap.MARK, "PYTHONMALLOC"):
        monkeypatch.delenv(name, raising=False)
    assert main(["bench", "sim", "--nodes", "5", "--pods", "20", "--hours", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] == 40


def _machine_gives_huge_pages() -> bool:
    return heap.thp_mode() in ("always", "madvise") and (heap.glibc_version() or (0, 0)) >= heap.MIN_GLIBC


def _bench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (heap.SWITCH, heap.MARK, "PYTHONMALLOC")} | env
    return subprocess.run([sys.executable, "-m", "testbed.apps.cli", "bench", "sim", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)


def test_bench_sim_runs_on_huge_pages_where_the_machine_gives_them_and_says_so():
    r = _bench({}, "--nodes", "200", "--pods", "10000", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    pages = result["heap"]
    if _machine_gives_huge_pages():
        # the kernel's own count is the evidence, and the tenth ran as the full size did
        assert pages["huge_pages"] and pages["why_not"] is None and pages["anon_huge_mib"] > 0, pages
        assert result["tenth"]["huge_pages"]
    else:
        assert not pages["huge_pages"] and pages["why_not"], pages


def test_bench_sim_with_the_switch_off_runs_on_small_pages_and_says_why():
    r = _bench({heap.SWITCH: "0"}, "--nodes", "50", "--pods", "500", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["heap"]["huge_pages"] is False and result["heap"]["why_not"] == "ENILAB_HUGE_PAGES=0"
    assert result["heap"]["anon_huge_mib"] in (0, None) and result["tenth"]["huge_pages"] is False


def test_a_bad_switch_exits_2_in_one_line_before_anything_runs():
    r = _bench({heap.SWITCH: "often"}, "--nodes", "50", "--pods", "500", "--json")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("enilab: error: ENILAB_HUGE_PAGES='often'") and r.stderr.count("\n") == 1, r.stderr


def test_an_interpreter_that_ignores_the_environment_is_not_started_again_and_says_why():
    """`python -E` would ignore PYTHONMALLOC in the process started again: huge pages asked, never given."""
    r = subprocess.run([sys.executable, "-E", "-m", "testbed.apps.cli", "bench", "sim", "--nodes", "20", "--pods",
                        "100", "--json"], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).parent.parent,
                       env={k: v for k, v in os.environ.items() if k not in (heap.MARK, "PYTHONMALLOC")})
    assert r.returncode == 0, r.stderr
    pages = json.loads(r.stdout)["heap"]
    assert pages["huge_pages"] is False and pages["why_not"] == "python -E or -I ignores PYTHONMALLOC", pages


@pytest.mark.parametrize(("argv", "moved"), [
    (["bench", "sim"], True), (["tune", "--workload", "steady"], True), (["bench", "bringup"], False),
    (["bench", "cni"], False), (["simulate", "grow-and-shrink"], False), (["status"], False),
])
def test_only_the_large_simulations_are_started_again(argv, moved):
    from testbed.apps.cli import _simulates_at_scale, build_parser

    assert _simulates_at_scale(build_parser().parse_args(argv)) is moved
