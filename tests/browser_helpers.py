"""JupyterLab server and notebook-page helpers for the real-browser test (tests/test_browser.py)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; without the background-networking flags Chromium keeps dialling Google's services,
# which a closed network refuses (and which a test has no business doing anyway).
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm; use /tmp instead
]

# JupyterLab user settings: no news or update checks (network, and toasts over the screenshot); every cell kept
# in the DOM (the default "contentVisibility" windowing may detach off-screen cells, hiding their prompts).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # a saved notebook keeps its widgets' state (their last figures), which the website shows
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
}


def in_ci() -> bool:
    """True when the CI variable is set to anything but an explicit no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def free_port() -> int:
    """A localhost port that was free a moment ago (the server's runtime file gives the one it really took)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running `jupyter lab` process and how to reach it."""
    proc: subprocess.Popen
    token: str
    runtime_dir: Path
    log_path: Path
    url: str = ""
    family: list = field(default_factory=list)  # psutil.Process of the server and its kernels

    def log_tail(self, n: int = 40) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def lab_env(home: Path) -> dict[str, str]:
    """Environment for the server and its kernels: fast, offline, quiet, every Jupyter/IPython dir under `home`."""
    env = dict(os.environ)
    env.update(CFCOURSE_FAST="1", TQDM_DISABLE="1", CFCOURSE_OFFLINE="1", OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
               PYTHONUNBUFFERED="1")
    env.pop("JUPYTER_TOKEN", None)
    return env


def write_lab_settings(settings_dir: Path) -> None:
    """Write LAB_SETTINGS as the user settings of a fresh JupyterLab."""
    for rel, values in LAB_SETTINGS.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")


def write_server_config(config_dir: Path) -> None:
    """Server config: no language-server autodetection (it runs `npm prefix -g`, which writes ~/.npm/_logs)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    config = {"LanguageServerManager": {"autodetect": False}}
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config), encoding="utf-8")


def browser_env(home: Path) -> dict[str, str]:
    """Environment for Chromium: its crash-report folder and GTK caches under `home`, not the user's."""
    return {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}


def start_lab(root_dir: Path, home: Path) -> LabServer:
    """Start `jupyter lab` (this venv's) on a free localhost port with a random token, serving `root_dir`."""
    token = secrets.token_hex(24)
    write_lab_settings(home / "settings")
    write_server_config(home / "config")
    log_path = home / "jupyter-lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={free_port()}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root_dir}", f"--LabApp.user_settings_dir={home / 'settings'}",
           f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--ServerApp.terminals_enabled=False",
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: the next lesson opens without a page reload
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=lab_env(home), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return LabServer(proc, token, home / "runtime", log_path)


def _runtime_url(server: LabServer) -> str:
    """The server's base URL from its jpserver-<pid>.json, or "" while it is not written yet."""
    path = server.runtime_dir / f"jpserver-{server.proc.pid}.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return f"http://127.0.0.1:{info['port']}{info.get('base_url', '/')}"


def wait_until_answering(server: LabServer, timeout: float = 60) -> None:
    """Poll until the server answers /api/status with its token; fail with its log if it dies or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.proc.returncode}:\n{server.log_tail()}")
        server.url = server.url or _runtime_url(server)
        if server.url:
            request = urllib.request.Request(server.url + "api/status",
                                             headers={"Authorization": f"token {server.token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s:\n{server.log_tail()}")


def remember_family(server: LabServer) -> None:
    """Add the server and its descendants (kernels) to server.family, so that teardown can prove they all exited."""
    try:
        root = psutil.Process(server.proc.pid)
        found = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    known = {p.pid for p in server.family}
    server.family += [p for p in found if p.pid not in known]


def stop_lab(server: LabServer, timeout: float = 20) -> list[str]:
    """Shut the server down (REST API, then SIGTERM, then SIGKILL); return the processes still alive after."""
    remember_family(server)
    if server.url and server.proc.poll() is None:
        request = urllib.request.Request(server.url + "api/shutdown", method="POST",
                                         headers={"Authorization": f"token {server.token}"})
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass
    for sig, wait_s in ((None, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if sig is not None:
            for p in _alive(server.family):
                p.send_signal(sig)
        psutil.wait_procs(_alive(server.family), timeout=wait_s)
        if not _alive(server.family):
            break
    server.proc.wait(timeout=5)  # reap it
    return [f"{p.pid} {_name(p)}" for p in _alive(server.family)]


def _alive(procs: list) -> list:
    """The processes of `procs` still running (zombies count as gone: they have exited)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _name(p) -> str:
    try:
        return " ".join(p.cmdline())[:120]
    except psutil.Error:
        return "?"


# ---------------------------------------------------------------------------
# The notebook page, read with one JavaScript call per poll.
# ---------------------------------------------------------------------------

NOTEBOOK_STATE_JS = r"""
() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  // The toolbar indicator says "idle" before any kernel exists; the status bar names the kernel and its state
  // ("No Kernel | Initializing", "Python 3 (ipykernel) | Connecting", ... "| Idle"). Idle means both agree.
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const status = indicator ? indicator.getAttribute('data-status') : null;
  const kernel = [...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')]
    .map(e => e.textContent.trim()).find(t => / \| \S+$/.test(t)) || '';
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
    .map(p => p.textContent.trim());
  const stderr = [...panel.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => e.textContent);
  return {
    status, kernel,
    idle: status === 'idle' && / \| Idle$/.test(kernel) && !kernel.startsWith('No Kernel'),
    prompts,
    running: prompts.filter(p => p.includes('*')).length,
    numbered: prompts.filter(p => /^\[\d+\]:$/.test(p)).length,
    errors: stderr.filter(t => /Traceback|Error|Exception/.test(t)).map(t => t.slice(0, 2000)),
  };
}
"""


def notebook_state(page) -> dict | None:
    """Kernel status, input prompts and error outputs of the notebook on the page."""
    return page.evaluate(NOTEBOOK_STATE_JS)


def wait_for_state(page, ready, timeout: float, what: str, settle: int = 2, poll: float = 0.5) -> dict:
    """Poll notebook_state until ready(state) holds `settle` polls in a row; raise with the last state if not."""
    deadline, streak, state = time.monotonic() + timeout, 0, None
    while time.monotonic() < deadline:
        state = notebook_state(page)
        streak = streak + 1 if state and ready(state) else 0
        if streak >= settle:
            return state
        time.sleep(poll)
    raise TimeoutError(f"{what}: not reached within {timeout:.0f} s; last notebook state: {state}")


# ---------------------------------------------------------------------------
# Browser tools, and the browser shared by the tests of a module.
# ---------------------------------------------------------------------------

def missing_browser_tools() -> str:
    """What is missing to drive a browser, or "" when nothing is."""
    import importlib.util

    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    return " and ".join(missing)


def sync_playwright_or_skip():
    """playwright.sync_api.sync_playwright; the test is skipped without browser tools, but fails under CI."""
    import pytest

    missing = missing_browser_tools()
    if missing and in_ci():
        pytest.fail(f"CI is set but the browser test cannot run: missing {missing}", pytrace=False)
    if missing:
        pytest.skip(f"browser test needs {missing}")
    from playwright.sync_api import sync_playwright
    return sync_playwright


def chromium_page(sync_playwright, home: Path, viewport: dict | None = None):
    """A generator fixture body: yield a headless Chromium page, then check that the browser and Playwright's
    driver are gone. Failed local requests and console errors are collected on the page."""
    before = {p.pid for p in psutil.Process().children()}
    with sync_playwright() as pw:
        driver = [p for p in psutil.Process().children() if p.pid not in before]  # Playwright's node process
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                                     env=browser_env(home))
        try:
            page = browser.new_page(viewport=viewport or {"width": 1280, "height": 1400})
            page.set_default_timeout(30_000)
            page.console_errors = []
            page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
            yield page
        finally:
            spawned = driver + [c for d in driver for c in d.children(recursive=True)]  # Chromium and its helpers
            browser.close()
    _, alive = psutil.wait_procs(spawned, timeout=10)
    assert not alive, f"browser processes left running: {[(p.pid, p.name()) for p in alive]}"


# The lessons that show a widget, and the cells that show one. tests/test_browser.py runs lessons 01-06 and
# tests/test_browser_lm.py lessons 08-10 (in order: 09 and 10 reuse the models 08 saves; 10 shows no widget but
# belongs to the chain) in JupyterLab, and moves every widget. In the full test run (CFCOURSE_BROWSER_LESSONS=1, set
# by scripts/test.sh) that run is the lesson's execution: nbval skips BROWSER_LESSONS (tests/site_cache.py) rather
# than run them a second time.
WIDGET_CELLS = {
    "01_forgetting_in_2d.ipynb": ["l01-22"],
    "02_permuted_mnist.ipynb": ["l02-10"],
    "03_three_scenarios.ipynb": ["l03-24"],
    "04_regularisation.ipynb": ["l04-36"],
    "05_rehearsal.ipynb": ["l05-26"],
    "06_distillation_and_isolation.ipynb": ["1bde2452"],
    "08_language_models_forget.ipynb": ["l08-29"],
    "09_mitigating_forgetting_in_lms.ipynb": ["l09-19", "l09-23"],
}
LM_CHAIN = ["08_language_models_forget.ipynb", "09_mitigating_forgetting_in_lms.ipynb", "10_forgetting_report.ipynb"]
BROWSER_LESSONS = sorted(set(WIDGET_CELLS) | set(LM_CHAIN))


def kernel_sessions(server: LabServer) -> list[dict]:
    """The server's notebook sessions (each with its kernel)."""
    request = urllib.request.Request(server.url + "api/sessions", headers={"Authorization": f"token {server.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def shut_down_kernels(server: LabServer) -> None:
    """End every session and its kernel (REST API), so that the next lesson starts alone on the CPU."""
    remember_family(server)
    for session in kernel_sessions(server):
        request = urllib.request.Request(server.url + f"api/sessions/{session['id']}", method="DELETE",
                                         headers={"Authorization": f"token {server.token}"})
        urllib.request.urlopen(request, timeout=30).close()
