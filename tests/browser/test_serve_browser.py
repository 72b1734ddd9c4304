"""The page of `trimdm serve` in a real browser: headless Chromium driven by Selenium against the CLI's
server (a subprocess on a free loopback port) with the tiny tri-modal run. Asks for two T2I images and
checks they decode as PNGs of the run's image size, uploads a PNG for I2T and reads the caption, asks for
speech and checks the audio element plays for more than zero seconds. Screenshots go to a temporary
folder named in the test's output.

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) and selenium
(the dev extra). Without them the tests skip with a loud reason, except under CI (CI=true), where they
fail: .ci/run installs the browser first."""
import base64
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
STEPS = 4  # every form asks for few decoding steps: the test checks the page, not the samples


def _missing() -> list[str]:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER))
               if not (Path(path).exists() or shutil.which(Path(path).name))]
    return missing + ([] if importlib.util.find_spec("selenium") else ["selenium (pip install -e '.[dev]')"])


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        reason = (f"BROWSER TESTS NOT RUN: {', '.join(missing)} missing; as root: apt-get install -y chromium "
                  "chromium-driver")
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(reason + " (CI is set: the browser tests must run)")
        warnings.warn(reason)
        print(f"\n{'!' * 20} {reason} {'!' * 20}", file=sys.stderr)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1800",
                "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER if Path(CHROMEDRIVER).exists()
                                              else shutil.which("chromedriver")), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tiny_tri_run):
    """`trimdm serve` on a free loopback port; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "trimdm", "serve", "--run", str(tiny_tri_run[1]), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                if json.loads(r.read())["status"] == "ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"trimdm serve did not start:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def shots(tmp_path_factory, record_property):
    """The screenshots' folder, named in the output (-s, or a failure's report) and the JUnit XML."""
    folder = tmp_path_factory.mktemp("serve_screenshots")
    print(f"\nscreenshots of the page: {folder}")
    record_property("screenshots", str(folder))
    return folder


def wait_until(driver, check, what: str, timeout: float = 90):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: check(d), message=f"waiting for {what}")


def open_tab(driver, panel: str):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-panel="{panel}"]').click()


def fill(driver, form: str, **values):
    from selenium.webdriver.common.by import By

    for name, value in values.items():
        field = driver.find_element(By.CSS_SELECTOR, f'#{form} [name="{name}"]')
        field.clear()
        field.send_keys(str(value))


def blob_bytes(driver, url: str) -> bytes:
    """The bytes behind an object URL of the page, read by the page itself."""
    encoded = driver.execute_async_script("""
        const [url, done] = arguments;
        fetch(url).then(r => r.arrayBuffer()).then(b => {
          let s = ""; for (const x of new Uint8Array(b)) s += String.fromCharCode(x); done(btoa(s));
        }).catch(e => done("failed: " + e));""", url)
    assert not encoded.startswith("failed"), encoded
    return base64.b64decode(encoded)


def test_the_page_draws_describes_and_speaks(browser, server, shots, tmp_path):
    from selenium.webdriver.common.by import By

    d = browser
    d.get(server)
    wait_until(d, lambda d: d.find_element(By.ID, "run-summary").text.startswith("run "), "the run's card")
    card = json.loads(urllib.request.urlopen(f"{server}/api/run").read())
    size = card["image"]["size"]

    # T2I: two images, each a PNG of the run's image size
    open_tab(d, "t2i")
    fill(d, "t2i-form", prompt="a red circle in the centre", n=2, steps=STEPS)
    d.find_element(By.ID, "t2i-go").click()
    images = wait_until(d, lambda d: (lambda found: found if len(found) == 2 else False)(
        d.find_elements(By.CSS_SELECTOR, "#t2i-outputs img.output")), "two T2I images")
    d.save_screenshot(str(shots / "t2i.png"))
    pngs = [blob_bytes(d, img.get_attribute("src")) for img in images]
    for png in pngs:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size == (size, size)
    assert len(d.find_elements(By.CSS_SELECTOR, "#t2i-live .canvas img")) == 2  # the streamed canvas was drawn
    assert "done in" in d.find_element(By.CSS_SELECTOR, "#t2i-live .status").text

    # I2T: a PNG uploaded through the file input; the caption appears
    upload = tmp_path / "scene.png"
    upload.write_bytes(pngs[0])
    open_tab(d, "i2t")
    d.find_element(By.ID, "i2t-file").send_keys(str(upload))
    fill(d, "i2t-form", n=1, steps=STEPS)
    d.find_element(By.ID, "i2t-go").click()
    caption = wait_until(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#i2t-outputs .output-text"), "a caption")[0]
    d.save_screenshot(str(shots / "i2t.png"))
    assert caption.text.strip(), "an empty caption"

    # T2S: an audio element that plays for more than zero seconds
    open_tab(d, "t2s")
    fill(d, "t2s-form", prompt="a blue square on the left", n=1, steps=STEPS)
    d.find_element(By.ID, "t2s-go").click()
    wait_until(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#t2s-outputs audio"), "an audio player")
    duration = wait_until(d, lambda d: d.execute_script(
        "const a = document.querySelector('#t2s-outputs audio'); return a.duration > 0 ? a.duration : false;"),
        "the audio's duration", timeout=30)
    d.save_screenshot(str(shots / "t2s.png"))
    assert duration > 0
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"] if hasattr(d, "get_log") else []
    assert not errors, errors
