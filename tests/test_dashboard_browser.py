"""The dashboard in a real headless Chromium (Debian's, driven by Selenium), served by a real
uvicorn, over a store filled by a real mobiledet_convert run of tiny models plus synthetic
earlier releases. Screenshots of every page go to tests/artifacts/dashboard/, and the
releases page also to docs/dashboard.png (the README's picture) when that file is missing or
MOBILEDET_UPDATE_DOCS=1 is set, so a test run does not rewrite a tracked file."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from browser import DashboardServer, console_errors, pipeline_store, start_chrome

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).parent / "artifacts" / "dashboard"
README_PICTURE = REPO / "docs" / "dashboard.png"
MAX_SHOT_HEIGHT = 4000


@pytest.fixture(scope="module")
def built(tmp_path_factory, airflow_db):
    return pipeline_store(tmp_path_factory)


@pytest.fixture(scope="module")
def server(built):
    from include.dashboard.app import create_app

    with DashboardServer(create_app(str(built["store_dir"]))) as s:
        yield s


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    driver = start_chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


def _open(chrome, url: str, shot: str | None = None) -> list[str]:
    """Load `url`, wait (bounded) until it is complete, save a screenshot; console errors."""
    console_errors(chrome)  # drop what an earlier page left
    chrome.set_window_size(1400, 1000)
    chrome.get(url)
    deadline = time.monotonic() + 30
    while chrome.execute_script("return document.readyState") != "complete":
        assert time.monotonic() < deadline, f"{url} did not finish loading"
        time.sleep(0.1)
    if shot:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        height = chrome.execute_script("return document.documentElement.scrollHeight")
        chrome.set_window_size(1400, max(600, min(int(height) + 120, MAX_SHOT_HEIGHT)))
        chrome.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
        chrome.set_window_size(1400, 1000)
    return console_errors(chrome)


def _pages(built) -> dict[str, str]:
    v = built["version"]
    return {"releases": "/", "trends": "/trends", "release": f"/releases/{v}",
            "diff": f"/diff?a={built['earlier'][-1]}&b={v}", "runs": "/runs",
            "run": f"/runs/{built['manifest']['lineage']['run_id']}",
            "trends-edgetpu-int8": "/trends?variant=edgetpu&precision=int8"}


def test_every_page_renders_without_console_errors(chrome, server, built):
    from selenium.webdriver.common.by import By

    for name, path in _pages(built).items():
        errors = _open(chrome, server.url + path, shot=name)
        assert errors == [], (path, errors)
        assert chrome.find_element(By.TAG_NAME, "h1").text, path
        assert "Error" not in chrome.title, (path, chrome.title)
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
    # the README's picture: the releases matrix as a person first sees it
    _open(chrome, server.url + "/")
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    chrome.set_window_size(1400, max(500, min(int(height) + 20, 1000)))
    chrome.save_screenshot(str(ARTIFACTS / "readme.png"))
    if not README_PICTURE.exists() or os.environ.get("MOBILEDET_UPDATE_DOCS") == "1":
        README_PICTURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "readme.png", README_PICTURE)


def test_matrix_shows_published_and_rejected_models_with_the_manifest_numbers(chrome, server,
                                                                              built):
    from selenium.webdriver.common.by import By

    assert _open(chrome, server.url + "/") == []
    store = built["store"]
    for version in [built["version"], *built["earlier"]]:
        manifest = store.read_json(f"mobiledet/{version}/manifest.json")
        for state, entries in (("published", manifest["published"]),
                               ("rejected", manifest["rejected"])):
            for e in entries:
                pair = f"{e['variant']}/{e['precision']}"
                cell = chrome.find_element(
                    By.CSS_SELECTOR, f'td.cell[data-version="{version}"][data-pair="{pair}"]')
                text = cell.text
                assert cell.get_attribute("data-state") == state
                assert ("PASS" if state == "published" else "REJECTED") in text
                m = e["metrics"]
                if m.get("size_bytes") is not None:
                    assert f"{m['size_bytes'] / 1e6:.2f} MB" in text, (version, pair, text)
                if e["decision"].get("map") is not None:
                    assert f"AP50 {e['decision']['map']:.3f}" in text, (version, pair, text)
                if m.get("latency_ms") is not None:
                    assert f"{m['latency_ms']:.1f} ms" in text, (version, pair, text)
    live = chrome.find_elements(By.CSS_SELECTOR, "td.cell.live")
    assert {c.get_attribute("data-pair") for c in live if
            c.get_attribute("data-version") == built["version"]} == {"edgetpu/float32"}


def test_a_rejected_models_reason_is_one_click_away(chrome, server, built):
    from selenium.webdriver.common.by import By

    assert _open(chrome, server.url + "/") == []
    cell = chrome.find_element(By.CSS_SELECTOR, f'td.cell[data-version="{built["version"]}"]'
                                                '[data-pair="edgetpu/int8"]')
    reason = cell.find_element(By.CSS_SELECTOR, "details.reason li")
    assert not reason.is_displayed()
    cell.find_element(By.TAG_NAME, "summary").click()
    assert reason.is_displayed()
    manifest = built["manifest"]
    [rejected] = manifest["rejected"]
    assert reason.text == rejected["reasons"][0]
    assert "DEQUANTIZE" in reason.text
    _open(chrome, server.url + "/", shot="releases-reason-open")


def test_the_trend_plot_has_one_point_per_release(chrome, server, built):
    from selenium.webdriver.common.by import By

    assert _open(chrome, server.url + "/trends") == []
    releases = 1 + len(built["earlier"])
    for pair in ("edgetpu-float32", "edgetpu-int8"):
        for what in ("metric", "latency", "size"):
            points = chrome.find_elements(By.CSS_SELECTOR, f"#plot-{pair}-{what} circle.pt")
            assert len(points) == releases, (pair, what)
        versions = [p.get_attribute("data-version") for p in
                    chrome.find_elements(By.CSS_SELECTOR, f"#plot-{pair}-metric circle.pt")]
        assert versions == [*built["earlier"], built["version"]]
    assert chrome.find_elements(By.CSS_SELECTOR, "#plot-edgetpu-int8-metric polyline.threshold")
    rejected = chrome.find_elements(By.CSS_SELECTOR, "#plot-edgetpu-int8-metric circle.rejected")
    assert len(rejected) >= 2  # the run's int8 and the synthetic ones that failed the drop gate


def test_the_release_page_shows_a_detection_picture(chrome, server, built):
    from selenium.webdriver.common.by import By

    assert _open(chrome, server.url + f"/releases/{built['version']}") == []
    section = chrome.find_element(By.ID, "model-edgetpu-float32")
    images = section.find_elements(By.CSS_SELECTOR, ".pictures img")
    assert len(images) == len(built["pictures"]) == 3
    for img in images:
        chrome.execute_script("arguments[0].scrollIntoView()", img)
    deadline = time.monotonic() + 20
    while not all(chrome.execute_script("return arguments[0].complete && "
                                        "arguments[0].naturalWidth > 0", i) for i in images):
        assert time.monotonic() < deadline, "the pictures did not load"
        time.sleep(0.1)
    assert console_errors(chrome) == []
    text = chrome.find_element(By.ID, "model-edgetpu-int8").text
    assert "Source: compiler" in text and "DEQUANTIZE" in text
    assert "checkpoint fingerprint" in chrome.find_element(By.ID, "lineage").text
