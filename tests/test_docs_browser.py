"""`mlstack docs --serve` in a real browser: headless Chromium (Debian's `chromium` package,
which scripts/test.sh installs when it can; skipped, saying why, where it is missing) loads
every page from the served report. No console message at all (the pages run no script, so a
message is a blocked load or an error), the graph's nodes and filled tables in the DOM
Chromium built, and screenshots that are not blank. The server is started and stopped by PID.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from mlstack.codegen.graph import system_graph
from mlstack.frontend.analysis import require_system
from mlstack.ops.site.layout import PAGES
from tests.conftest import REPO, ctrl_c_reaches_it
from tests.docs_site_support import make_project

pytestmark = pytest.mark.slow
BROWSER = next((found for name in ("chromium", "chromium-browser", "google-chrome")
                if (found := shutil.which(name))), None)
# The fewest table cells (<td>) each page must show, filled from the fabricated state.
TABLE_CELLS = {"features.html": 30, "model.html": 20, "slos.html": 60, "rollouts.html": 20,
               "monitoring.html": 8, "plan.html": 8}


def _run_browser(args: list[str], profile: Path, timeout: float = 90) -> tuple[str, str]:
    """Run headless Chromium to the end; its whole process group is killed on a timeout."""
    argv = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
            "--v=0", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish in {timeout} s: {args}")
    return out, err


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line or "Refused to" in line]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`mlstack docs --serve --port 0` on the fabricated project: (base URL, project)."""
    if BROWSER is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium "
                    "package where apt-get can)")
    project = make_project(tmp_path_factory.mktemp("browser"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "mlstack", "docs", "-C", str(project),
                             "--serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=ctrl_c_reaches_it)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=60)
            if m := re.search(r"Serving it at (http://127\.0\.0\.1:\d+/)", line):
                url = m[1]
        yield url, project
    except queue.Empty:
        pytest.fail("mlstack docs --serve printed no URL: " + proc.stderr.read()
                    if proc.poll() is not None else "mlstack docs --serve printed no URL")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, "Ctrl-C should stop the server cleanly"


def test_the_server_serves_the_folder_with_the_policy(served):
    url, _ = served
    with urllib.request.urlopen(url + "graph.svg", timeout=30) as response:
        assert response.headers["Content-Type"] == "image/svg+xml"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.read().startswith(b"<svg")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url + "../mlstack.yaml", timeout=30)


@pytest.mark.parametrize("page", [f for f, _ in PAGES])
def test_every_page_loads_without_console_messages(served, page, tmp_path):
    url, project = served
    dom, err = _run_browser(["--dump-dom", url + page], tmp_path / "profile")
    assert _console_lines(err) == []
    assert "<main>" in dom and "<h1>" in dom
    assert dom.count('aria-current="page"') == 1
    if page == "index.html":
        graph = system_graph(require_system(project / "mlstack.yaml")[0])
        ids = set(re.findall(r'<g class="node[^"]*" id="([a-z_0-9]+)"', dom))
        assert ids == {n.id for n in graph.nodes}
        assert dom.count('class="edge"') == len(graph.edges)
    else:
        assert dom.count("<td>") >= TABLE_CELLS[page], page


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB or RGBA PNG, unfiltered."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks.setdefault(kind, body)
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                      else corner)) & 255
        rows.append(bytes(line))
        prev = bytes(line)
    return width, height, rows


@pytest.mark.parametrize("page", ["index.html", "slos.html"])
def test_screenshots_are_not_blank(served, page, tmp_path):
    url, _ = served
    shot = tmp_path / "shot.png"
    _, err = _run_browser(["--hide-scrollbars", "--window-size=1280,900",
                           f"--screenshot={shot}", url + page], tmp_path / "profile")
    assert _console_lines(err) == []
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 900)
    bpp = len(rows[0]) // width
    pixels = [row[i:i + 3] for row in rows[::4] for i in range(0, len(row), bpp * 4)]
    background = max(set(pixels), key=pixels.count)
    inked = sum(1 for p in pixels if p != background) / len(pixels)
    assert background == b"\xff\xff\xff"  # the page's white
    assert inked > 0.05, f"only {inked:.1%} of the screenshot differs from the background"
    assert len(set(pixels)) > 20  # header, text, the graph's colours, badges
