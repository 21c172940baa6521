"""The inspector page in a real browser (headless Chromium from Debian's packages), on items the real
worker enriched: the item page shows its tags, its image and its neighbours' images; a screenshot renders."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgpack
import numpy as np
import pytest
from cli_runs import cli, wait_for
from pydantic import SecretStr

from corpora import appstream
from ops.kafka.clients import TopicReader, publish
from ops.local.harness import settings_env, start_worker
from ops.local.process import free_port, stop_pid
from ops.measure.evaluate_kinds import app_event

pytestmark = pytest.mark.e2e
TOKEN = "page-token"
INSTALL = "apt-get install chromium chromium-driver"


@pytest.fixture
def browser():
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip(f"the browser tests need Debian's chromium and chromium-driver ({INSTALL})")
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_bin))
    yield driver
    driver.quit()


def _api(port: int, path: str) -> object:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
    except OSError:
        return None


def _enriched(settings, ids: set[str], timeout_s: float = 240) -> dict[str, dict]:
    from enrich.schemas import decode

    reader = TopicReader(settings, ["items.enriched"])
    got: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while not ids <= set(got) and time.monotonic() < deadline:
        for r in reader.poll(0.5):
            v = decode(r.value)
            got[v["item_id"]] = v
    reader.close()
    return got


def _loaded_images(driver, css: str) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].filter(i => i.complete && i.naturalWidth > 0).length",
        css)


def test_an_item_page_shows_its_tags_image_and_neighbours_images(small_stack, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    s = small_stack.updated(**{"topic_prefix": f"p{time.time_ns()}.", "web_port": free_port(),
                                       "group_id": f"g{time.time_ns()}", "recall_token": SecretStr(TOKEN)})
    assert cli(s, "topics", "create").returncode == 0
    assert cli(s, "vocab", "load", "--debtags").returncode == 0
    icons = appstream.load_icons()
    apps = [it for it in appstream.load_snapshot() if it.split == "test" and it.tags][:8]
    events = [app_event(it, "long_text_image", icons[it.id]) for it in apps[:6]]
    events += [app_event(it, "image_only", icons[it.id]) for it in apps[6:]]
    worker = start_worker(s, tmp_path / "worker.log")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ops.cli", "recall", "serve", "--port", str(port)],
                              env=settings_env(s), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        publish(s, "items.new", [(e["id"].encode(), msgpack.packb(e, use_bin_type=True)) for e in events])
        ids = {e["id"] for e in events}
        records = _enriched(s, ids)
        assert ids <= set(records), (tmp_path / "worker.log").read_text()[-3000:]
        wait_for(lambda: (_api(port, "/api/status") or {}).get("items") == len(ids), 60, "the page's feed")
        target = events[0]["id"]
        want_tags = [t["tag"] for t in sorted(records[target]["tags"], key=lambda t: (-t["grade"], -t["prob"]))]
        assert want_tags, records[target]

        browser.get(f"http://127.0.0.1:{port}/#item={target}")
        wait = WebDriverWait(browser, 30)
        token = wait.until(lambda d: d.find_elements(By.ID, "token"))[0]  # the data is behind the API's token
        token.send_keys(TOKEN)
        token.submit()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#tags tr.tag")) == len(want_tags))
        rows = browser.find_elements(By.CSS_SELECTOR, "#tags tr.tag")
        shown = [row.find_element(By.TAG_NAME, "a").text for row in rows]
        assert shown == want_tags
        assert browser.find_element(By.ID, "title").text == events[0]["title"]
        wait.until(lambda d: _loaded_images(d, "img.main-thumb") == 1)
        wait.until(lambda d: _loaded_images(d, "#neighbours-ann img.thumb") >= 5)
        cards = browser.find_elements(By.CSS_SELECTOR, "#neighbours-ann .card")
        neighbours = [c.get_attribute("data-item") for c in cards]
        assert target not in neighbours and set(neighbours) <= ids
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-items") == str(len(ids)))

        png = browser.get_screenshot_as_png()
        shot = Image.open(io.BytesIO(png)).convert("RGB")
        assert shot.size == (1280, 1000) or shot.size[0] >= 1000
        px = np.asarray(shot)
        header = px[1:6, :].reshape(-1, 3)  # the header bar's top padding, above its form and text
        assert (np.abs(header.astype(int) - [0x1F, 0x3A, 0x5F]).sum(1) < 30).mean() > 0.9  # the header bar
        thumb = browser.find_element(By.CSS_SELECTOR, "img.main-thumb").rect
        box = px[int(thumb["y"]):int(thumb["y"] + thumb["height"]), int(thumb["x"]):int(thumb["x"] + thumb["width"])]
        assert len(np.unique(box.reshape(-1, 3), axis=0)) > 20  # an icon drawn there, not a blank box
        Path(tmp_path / "inspector.png").write_bytes(png)

        tag = want_tags[0]
        browser.get(f"http://127.0.0.1:{port}/#tag={tag}")
        wait.until(lambda d: target in [c.get_attribute("data-item") for c in
                                        d.find_elements(By.CSS_SELECTOR, "#tag-items .card")])
        wait.until(lambda d: _loaded_images(d, "#tag-items img.thumb") >= 1)
    finally:
        stop_pid(server.pid, 10, server)
        stop_pid(worker.pid, 30, worker)
