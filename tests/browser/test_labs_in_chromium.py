"""Every lab opened in JupyterLab in a real browser (Debian's chromium driven by playwright), as a learner
would: Run All, move a widget, and nothing left broken on screen: no error output, no "Loading widget...",
no slider label or table cut at 1280 px. Screenshots go to artifacts/labs/ (CI keeps them).

JupyterLab runs as a normal user, the newcomer of tests/browser/conftest.py, from the venv `make demo` made
in their fresh clone: every lab's kernel ("Python 3 (enilab)") builds its cluster in a user namespace of
the user's own, and each lab's kernel-state and packet cells must show the kernel's rules and real
packets, not the simulator. Once more as root, for the labs that read a kernel and run containers.

Needs chromium (`apt-get install chromium`) and the browser extras (`pip install '.[browser]'`): without
them the test is skipped, and under ENILAB_REQUIRE_ROOT=1 (CI as root) it fails instead. Run alone with
`pytest -p no:xdist tests/browser`; ci/test.sh runs it as its own step.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABS = sorted(p.name for p in (ROOT / "labs").glob("[0-9][0-9]-*.ipynb"))
ARTIFACTS = ROOT / "artifacts" / "labs"
CHROMIUM = os.environ.get("ENILAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
WIDTH, HEIGHT = 1280, 900
RUN_TIMEOUT_S = 240

# What a learner would see in each lab's widgets, and how they move one.
WIDGETS = {"01": "slider", "02": "button", "06": "slider"}

# What each lab shows of a kernel (its own `ip`'s answers) and of real packets (trace hops seen on the wire),
# which the simulator cannot show: proof that the lab ran on namespaces, whoever ran Jupyter.
IP_LINK = r"(?m)^eth1@if\d+ +UP "
IP_RULE = r"(?m)^1536:\s+from 10\.\d+\.\d+\.\d+ lookup 20\d\d$"
ON_THE_WIRE = r"(?m)^  (fabric|node-\d): (in|out) \S+ \((request|reply)"
KERNEL_EVIDENCE = {
    "01": [IP_LINK], "02": [IP_LINK], "03": [IP_RULE, ON_THE_WIRE], "04": [IP_RULE, ON_THE_WIRE],
    "05": [IP_RULE], "06": [IP_LINK], "07": [r"Correct: '10\.0\.2\.1'"], "08": [IP_LINK], "09": [ON_THE_WIRE],
    "10": [IP_RULE, r"(?m)^\$ ip rule show priority 1536"], "11": [IP_RULE],
    "12": [r"Done: ticket 2: pod-4 reaches db-1", r"(?m)^\$ ip rule add priority 1536"], "13": [],
    "14": [IP_RULE, ON_THE_WIRE],
}
# What a lab says when it runs on the simulator, or skips a check that needs a kernel.
SIMULATED = re.compile(r"Simulator \(|\(simulator: |Exercise skipped: |Task skipped: ")


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    for module in ("playwright", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            return f"no {module} (pip install '.[browser]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Labs run once more in a JupyterLab of root's: the labs whose point is the kernel's state, real packets and
# pods as containers.
AS_ROOT_TOO = ("03", "14")
CASES = [("newcomer", name) for name in LABS] + [("root", name) for name in LABS if name[:2] in AS_ROOT_TOO]


def _wait_until_up(server: subprocess.Popen, base: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)


def _jupyter_home(home: Path, labs: Path) -> dict[str, str]:
    """Jupyter's folders under `home`, and the environment that points at them (no "news?" pop-up)."""
    (home / "config" / "labconfig").mkdir(parents=True)
    (home / "config" / "labconfig" / "page_config.json").write_text(
        '{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    return {"ENILAB_LAB_SOLUTIONS": "1", "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}


def _lab_argv(python: str, port: int, token: str, home: Path, labs: Path) -> list[str]:
    return [python, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={labs}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=None",
            f"--LabApp.workspaces_dir={home / 'workspaces'}"]


@pytest.fixture(scope="module")
def jupyter(request):
    """A function giving the (base URL, token) of a JupyterLab of "newcomer" or "root", started on first use."""
    why = _missing()
    if why:
        if os.environ.get("ENILAB_REQUIRE_ROOT") == "1":
            pytest.fail(f"ENILAB_REQUIRE_ROOT=1 but the browser test cannot run: {why}", pytrace=False)
        pytest.skip(why)
    servers: dict[str, tuple[str, str]] = {}
    cleanup: list = []

    def start(who: str) -> tuple[str, str]:
        if who in servers:
            return servers[who]
        port, token = _free_port(), secrets.token_hex(16)
        if who == "root":
            home = Path(tempfile.mkdtemp(prefix="enilab-jupyter-"))
            cleanup.append(lambda: shutil.rmtree(home, ignore_errors=True))
            for folder in ("labs", "fixtures"):  # a copy: the server may autosave what it runs
                shutil.copytree(ROOT / folder, home / "tree" / folder)
            labs = home / "tree" / "labs"
            (home / "kernels").mkdir()  # this checkout's kernelspec, whatever the venv holds
            shutil.copytree(ROOT / "testbed" / "apps" / "kernelspec", home / "kernels" / "kernels" / "enilab")
            env = {**os.environ, **_jupyter_home(home, labs), "JUPYTER_PATH": str(home / "kernels")}
            argv = [*_lab_argv(sys.executable, port, token, home, labs), "--allow-root"]
        else:
            user = request.getfixturevalue("newcomer")
            assert user.demo.returncode == 0, "make demo failed as the newcomer: see its own test"
            home = user.home / "jupyter"
            labs = user.clone / "labs"  # the user's own clone: the server may autosave there
            home.mkdir()
            env = user.env(**_jupyter_home(home, labs))
            user.give(home)
            argv = user.argv(_lab_argv(str(user.clone / ".venv" / "bin" / "python"), port, token, home, labs), env)
            env = None
        log_path = Path(tempfile.mkstemp(prefix=f"enilab-jupyter-{who}-", suffix=".log")[1])
        cleanup.append(log_path.unlink)
        with open(log_path, "wb") as log:
            server = subprocess.Popen(argv, cwd=labs, env=env, stdout=log, stderr=subprocess.STDOUT)
        cleanup.append(lambda: _stop(server))
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(server, base, token, log_path)
        servers[who] = (base, token)
        return servers[who]

    try:
        yield start
    finally:
        for step in reversed(cleanup):
            step()


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        finally:
            browser.close()


# Read the open notebook through JupyterLab's own model: every code cell run, the kernel idle, the outputs.
STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.sessionContext.session) return null;
  const kernel = panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code').map(c => ({
    count: c.model.executionCount, outputs: c.model.outputs.toJSON(),
    source: c.model.sharedModel.getSource().slice(0, 80)}));
  return {status: kernel ? kernel.status : 'none', cells};
}"""

CUT_JS = """() => {
  const cut = [];
  for (const el of document.querySelectorAll('.widget-label, .widget-inline-hbox label')) {
    if (el.offsetParent && el.scrollWidth > el.clientWidth + 1)
      cut.push(`label (${el.scrollWidth} > ${el.clientWidth} px): ` + el.textContent);
  }
  for (const el of document.querySelectorAll('.jp-OutputArea-output pre')) {
    if (el.offsetParent && el.scrollWidth > el.clientWidth + 1)
      cut.push(`text (${el.scrollWidth} > ${el.clientWidth} px): ` + el.textContent.slice(0, 60));
  }
  return cut;
}"""


def _state(page):
    return page.evaluate(STATE_JS)


def _run_all(page, name: str) -> dict:
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.isReady", timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        state = _state(page)
        if state and state["status"] == "idle" and (all(c["count"] for c in state["cells"]) or _problems(state)):
            return state  # every cell ran, or one failed and Run All stopped there
        if time.monotonic() > deadline:
            pytest.fail(f"{name}: Run All did not finish in {RUN_TIMEOUT_S} s: {state}")
        time.sleep(0.25)


def _problems(state: dict) -> list[str]:
    found = []
    for cell in state["cells"]:
        for out in cell["outputs"]:
            if out["output_type"] == "error":
                found.append(f"{cell['source']!r}: {out['ename']}: {out['evalue']}")
            elif out["output_type"] == "stream" and out["name"] == "stderr":
                found.append(f"{cell['source']!r}: stderr: {''.join(out['text'])[:300]}")
    return found


def _text(state: dict) -> str:
    """Everything the lab printed."""
    return "".join("".join(out["text"]) for cell in state["cells"] for out in cell["outputs"]
                   if out["output_type"] == "stream")


def _simulated(state: dict) -> list[str]:
    return [line for line in _text(state).splitlines() if SIMULATED.search(line)]


def _move_widget(page, kind: str) -> None:
    """Move one widget the way a learner does, and wait for its output to change."""
    before = page.evaluate("() => document.querySelector('.jp-OutputArea-child .widget-output, .widget-interact')"
                           "?.closest('.jp-Cell')?.innerText ?? ''")
    if kind == "slider":
        handle = page.locator(".widget-slider .noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.keyboard.press("ArrowRight")
    else:
        button = page.locator(".widget-button").first
        button.scroll_into_view_if_needed()
        button.click()
    page.wait_for_function(
        "before => { const el = document.querySelector('.jp-OutputArea-child .widget-output, .widget-interact');"
        " const text = el?.closest('.jp-Cell')?.innerText ?? ''; return text !== before && text.length > 0; }",
        arg=before, timeout=90_000)


@pytest.mark.parametrize(("who", "name"), CASES, ids=[f"{who}-{name[:2]}" for who, name in CASES])
def test_the_lab_runs_in_a_real_browser(page, jupyter, who, name):
    base, token = jupyter(who)
    shot = name[:-6] + ("-root" if who == "root" else "")
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    state = _run_all(page, name)
    assert not _problems(state), f"{name}: " + "\n".join(_problems(state))
    assert not _simulated(state), f"{name} as {who}: " + "\n".join(_simulated(state))
    kind = WIDGETS.get(name[:2])
    if kind:
        page.wait_for_function("() => !document.body.innerText.includes('Loading widget...')", timeout=90_000)
        _move_widget(page, kind)
        state = _state(page)
        assert not _problems(state), f"{name} after moving a widget: " + "\n".join(_problems(state))
        page.screenshot(path=str(ARTIFACTS / f"{shot}-widget.png"))
    body = page.evaluate("() => document.body.innerText")
    assert "Loading widget..." not in body, f"{name}: a widget never rendered"
    cut = page.evaluate(CUT_JS)
    assert not cut, f"{name}: cut at {WIDTH} px: {cut}"
    if name[:2] in KERNEL_EVIDENCE:
        text = _text(state)
        for evidence in KERNEL_EVIDENCE[name[:2]]:
            assert re.search(evidence, text), f"{name} as {who}: no {evidence!r} in what the lab showed"
    page.screenshot(path=str(ARTIFACTS / f"{shot}-ran.png"))
    page.evaluate("async () => { const nb = window.jupyterapp.shell.currentWidget.content;"
                  " await nb.scrollToCell(nb.widgets[nb.widgets.length - 1], 'end'); }")
    page.screenshot(path=str(ARTIFACTS / f"{shot}-end.png"))
    _shut_kernels(base, token)


def _shut_kernels(base: str, token: str) -> None:
    """One lab's kernel at a time: end the sessions through the server's REST API."""
    import json

    sessions = json.loads(urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=10).read())
    for session in sessions:
        req = urllib.request.Request(f"{base}/api/sessions/{session['id']}?token={token}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).read()


def test_an_error_or_a_stderr_output_is_a_problem_and_a_clean_run_is_not():
    """The checks above read JupyterLab's own model; here, without a browser, that they can fail."""
    clean = {"cells": [{"source": "x = 1", "count": 1, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "Correct: 1"}]}]}
    assert _problems(clean) == []
    broken = {"cells": [{"source": "c.pod('x')", "count": 2, "outputs": [
        {"output_type": "error", "ename": "KeyError", "evalue": "'x'", "traceback": []}]},
        {"source": "warn()", "count": 3, "outputs": [{"output_type": "stream", "name": "stderr", "text": ["oops"]}]}]}
    assert _problems(broken) == ["\"c.pod('x')\": KeyError: 'x'", "'warn()': stderr: oops"]


def test_a_lab_on_the_simulator_is_caught_and_kernel_evidence_is_not_mistaken():
    """The simulator's words are caught; every lab but the tuning one has evidence to find."""
    fell_back = {"cells": [{"source": "c = open_cluster(...)", "count": 1, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["Simulator (not root: ...): no kernel\n"]},
        {"output_type": "stream", "name": "stdout", "text": "Task skipped: 'fix' changes a kernel (not root)\n"}]}]}
    assert len(_simulated(fell_back)) == 2
    shown = "$ ip rule    # on node-1\n1536:\tfrom 10.0.1.4 lookup 2003\n  fabric: in n1e1 (request node-1/eth1)\n"
    ran = {"cells": [{"source": "ip(c, 'node-1', 'rule')", "count": 1, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": shown}]}]}
    assert _simulated(ran) == [] and re.search(IP_RULE, _text(ran)) and re.search(ON_THE_WIRE, _text(ran))
    assert sorted(KERNEL_EVIDENCE) == [name[:2] for name in LABS]
    assert [n for n, found in KERNEL_EVIDENCE.items() if not found] == ["13"]
