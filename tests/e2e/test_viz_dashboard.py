"""The viz dashboard in a real headless Chromium, against the live local mesh and its demo.

``gossamer viz dashboard --show url`` forwards a port of the host's loopback to the dashboard
in the node namespace; Chromium (Debian's, driven by Selenium through Debian's chromedriver)
loads each page through it. Each test asserts what the DOM shows and saves a screenshot under
the test's tmp output, whose path it prints.
"""

from __future__ import annotations

import html
import os
import re
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from localmesh import LocalMeshHandle, converge

pytestmark = pytest.mark.netns

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "k8s"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: A closed-network machine: Chromium must not try to reach anything but the dashboard.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
)  # fmt: skip
IDENTITY = "{}.demo.serviceaccount.identity.gossamer.cluster.local"
#: Where the screenshots' paths are also listed, for the reader of a run (as test_viz.py's).
OUTPUT = Path(os.environ.get("GOSSAMER_VIZ_OUTPUT", "/dev/null"))


@pytest.fixture(scope="module")
def demo(local_mesh: LocalMeshHandle) -> LocalMeshHandle:
    for path in sorted(DEMO.glob("*.yaml")):
        local_mesh.apply(path.read_text())
    for app, count in (("slow", 2), ("flaky", 2), ("web", 1), ("traffic", 1)):
        local_mesh.wait_ready("demo", f"app={app}", count, limit=180)
    return local_mesh


@pytest.fixture(scope="module")
def dashboard(demo: LocalMeshHandle) -> Iterator[tuple[str, str]]:
    """(URL, what the command printed) of ``gossamer viz dashboard`` on a free port."""
    argv = [
        sys.executable, "-m", "gossamer_cli.main", "viz", "dashboard", "--show", "url",
        "--address", "127.0.0.1", "--port", "0", "--state-dir", str(demo.state_dir),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        printed = _read_until(proc, rb"http://127\.0\.0\.1:\d+\n", limit=60)
        url = re.search(r"http://127\.0\.0\.1:\d+", printed)
        assert url is not None, printed
        yield url.group(0), printed
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_until(proc: subprocess.Popen[bytes], pattern: bytes, limit: float) -> str:
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + limit
    while not re.search(pattern, out):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
            raise AssertionError(f"gossamer viz dashboard printed {out!r}; stderr: {err}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            out += os.read(proc.stdout.fileno(), 4096)
    return out.decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs Debian's chromium and chromium-driver (make deb)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="gossamer-chromium-") as profile:
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


def screenshot(driver: WebDriver, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot at {path}"
    assert path.stat().st_size > 1000
    print(f"screenshot: {path}")
    with OUTPUT.open("a") as out:
        out.write(f"dashboard screenshot: {path}\n")
    return path


def table(driver: WebDriver, table_id: str) -> dict[str, dict[str, str]]:
    """{row name: {column class: text}} as the browser renders the table."""
    rows = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr"):
        cells = {}
        for td in tr.find_elements(By.TAG_NAME, "td"):
            cells[(td.get_attribute("class") or "").split()[0]] = td.text
        rows[tr.get_attribute("data-name") or ""] = cells
    return rows


def rps(text: str) -> float:
    return float(text.removesuffix("rps")) if text.endswith("rps") else 0.0


def load(driver: WebDriver, url: str, table_id: str) -> dict[str, dict[str, str]]:
    driver.get(url)
    return table(driver, table_id)


def test_dashboard_command_prints_the_url(dashboard: tuple[str, str]) -> None:
    url, printed = dashboard
    assert printed.splitlines()[:2] == ["Gossamer dashboard available at:", url]
    assert "browser" not in printed  # --show url: no browser, and no word about one


def test_namespaces_page_shows_the_demo_namespace(
    dashboard: tuple[str, str], browser: WebDriver, shots: Path
) -> None:
    url, _ = dashboard
    rows = converge(
        lambda: load(browser, f"{url}/namespaces", "namespaces"),
        lambda r: rps((r.get("demo") or {}).get("rps", "")) > 0,
        limit=120,
    )
    assert browser.title == "Namespaces · Gossamer"
    demo = rows["demo"]
    assert rps(demo["rps"]) > 0
    assert re.fullmatch(r"\d+\.\d\d%", demo["success"])
    assert demo["meshed"] == "6/6"
    screenshot(browser, shots, "namespaces")


def test_namespace_page_shows_the_demos_deployments_and_pods(
    dashboard: tuple[str, str], browser: WebDriver, shots: Path
) -> None:
    url, _ = dashboard
    served = ("web", "slow", "flaky")
    rows = converge(
        lambda: load(browser, f"{url}/namespaces/demo", "deployments"),
        lambda r: all(rps((r.get(n) or {}).get("rps", "")) > 0 for n in served),
        limit=120,
    )
    assert set(rows) == {"web", "slow", "flaky", "traffic"}
    for name, replicas in (("web", 1), ("slow", 2), ("flaky", 2), ("traffic", 1)):
        assert rows[name]["meshed"] == f"{replicas}/{replicas}"
    for name in served:
        assert rps(rows[name]["rps"]) > 0, rows[name]
        success = float(rows[name]["success"].removesuffix("%"))
        assert 0 < success <= 100
        assert rows[name]["p50"].endswith("ms")
    assert rows["traffic"]["rps"] == "-"  # nothing calls the load generator
    assert float(rows["slow"]["p50"].removesuffix("ms")) >= 100  # slow answers after 150 ms
    pods = table(browser, "pods")
    assert len(pods) == 6
    assert sum(1 for p in pods if p.startswith("slow-")) == 2
    screenshot(browser, shots, "namespace-demo")


def test_deployment_page_shows_its_pods_callers_and_calls(
    dashboard: tuple[str, str], browser: WebDriver, shots: Path
) -> None:
    url, _ = dashboard
    browser.get(f"{url}/namespaces/demo")
    browser.find_element(
        By.CSS_SELECTOR, "table#deployments a[href='/namespaces/demo/deployments/web']"
    ).click()

    def seen() -> dict[str, dict[str, dict[str, str]]]:
        if not browser.current_url.endswith("/namespaces/demo/deployments/web"):
            browser.get(f"{url}/namespaces/demo/deployments/web")
        return {t: table(browser, t) for t in ("resource", "pods", "inbound", "outbound")}

    found = converge(
        seen,
        lambda t: {"slow", "flaky"} <= set(t["outbound"]) and "traffic" in t["inbound"],
        limit=90,
    )
    assert browser.title == "Deployment web · Gossamer"
    assert rps(found["resource"]["web"]["rps"]) > 0
    assert len(found["pods"]) == 1
    assert {"slow", "flaky"} <= set(found["outbound"])
    assert all(rps(found["outbound"][n]["rps"]) > 0 for n in ("slow", "flaky"))
    assert rps(found["inbound"]["traffic"]["rps"]) > 0
    screenshot(browser, shots, "deployment-web")


def test_edges_page_draws_mtls_edges_between_the_deployments(
    dashboard: tuple[str, str], browser: WebDriver, shots: Path
) -> None:
    url, _ = dashboard
    wanted = {("traffic", "web"), ("web", "slow"), ("web", "flaky")}

    def drawn() -> dict[tuple[str, str], str]:
        browser.get(f"{url}/namespaces/demo/edges")
        return {
            (line.get_attribute("data-src") or "", line.get_attribute("data-dst") or ""):
                line.get_attribute("data-secured") or ""
            for line in browser.find_elements(By.CSS_SELECTOR, "svg#edges-graph line.edge")
        }  # fmt: skip

    edges = converge(drawn, lambda e: wanted <= set(e))
    assert wanted <= set(edges)
    assert all(edges[pair] == "true" for pair in wanted)
    nodes = {
        g.get_attribute("data-name") for g in browser.find_elements(By.CSS_SELECTOR, "svg g.node")
    }
    assert {"traffic", "web", "slow", "flaky"} <= nodes
    rows = {
        (tr.get_attribute("data-src"), tr.get_attribute("data-dst")): tr
        for tr in browser.find_elements(By.CSS_SELECTOR, "table#edges tbody tr")
    }
    web_slow = rows[("web", "slow")]
    assert web_slow.find_element(By.CLASS_NAME, "client-id").text == IDENTITY.format("web")
    assert web_slow.find_element(By.CLASS_NAME, "server-id").text == IDENTITY.format("slow")
    screenshot(browser, shots, "edges-demo")


def test_dashboard_refuses_foreign_hosts_and_bad_names(
    dashboard: tuple[str, str], browser: WebDriver
) -> None:
    url, _ = dashboard
    request = urllib.request.Request(f"{url}/namespaces", headers={"Host": "rebound.example"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(request, timeout=10)
    assert refused.value.code == 403
    browser.get(f"{url}/namespaces/Not_A_Namespace")
    assert "invalid namespace name" in browser.find_element(By.TAG_NAME, "body").text


def test_tap_page_shows_live_requests_of_the_web_deployment(
    dashboard: tuple[str, str], browser: WebDriver, shots: Path
) -> None:
    url, _ = dashboard
    browser.get(f"{url}/namespaces/demo/deployments/web")
    browser.find_element(By.ID, "tap-link").click()

    def requests() -> list[dict[str, str]]:
        if not browser.current_url.endswith("/namespaces/demo/deployments/web/tap"):
            browser.get(f"{url}/namespaces/demo/deployments/web/tap")
        # One read of the whole table (the page refreshes itself every few seconds).
        tables = browser.find_elements(By.CSS_SELECTOR, "table#tap")
        text = (tables[0].get_attribute("outerHTML") or "") if tables else ""
        return [
            {k: html.unescape(v) for k, v in re.findall(r'<td class="(\w+)[^"]*">(.*?)</td>', tr)}
            for tr in re.findall(r"<tr data-name=[^>]*>(.*?)</tr>", text)
        ]

    rows = converge(requests, lambda r: any(row["status"] != "-" for row in r), limit=60)
    assert browser.title == "Tap deployment web · Gossamer"
    assert not browser.find_elements(By.ID, "tap-error")
    answered = [r for r in rows if r["status"] != "-"]
    assert {r["direction"] for r in rows} <= {"in", "out"}
    assert all(r["method"] for r in rows), rows[:5]
    assert any(r["method"] == "GET" for r in rows), rows[:5]
    assert all(r["path"].startswith("/") for r in rows)
    assert {r["status"].split()[0] for r in answered} <= {"200", "500", "503"}
    assert all(re.fullmatch(r"\d+(µs|ms)|\d+\.\d+s", r["latency"]) for r in answered), answered[:5]
    assert {r["tls"] for r in rows} == {"true"}  # the demo is all mTLS
    # Its own calls to slow and flaky, and traffic's calls to it, as its proxy saw them.
    assert any(r["direction"] == "out" and r["destination"].startswith("slow-") for r in rows)
    assert any(r["direction"] == "in" and r["source"].startswith("traffic-") for r in rows)
    # No script anywhere: the page refreshes itself into a new bounded tap.
    assert not browser.find_elements(By.TAG_NAME, "script")
    refresh = browser.find_element(By.CSS_SELECTOR, "meta[http-equiv='refresh']")
    assert refresh.get_attribute("content") == "5"
    screenshot(browser, shots, "tap-web")
