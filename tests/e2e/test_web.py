"""The web page at GET /, driven in a real headless Chromium (Selenium + Debian's chromium-driver).

Against the real service (client_infer.py, TorchServe, tiny model): a clip is uploaded and the 4x result
plays; a text file shows its error in plain words. Against an in-process backend (the real handler pipeline,
no TorchServe): the seam holds, and a request that has to wait shows its place in the queue. Without
Chromium these tests skip and say why.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from model.frvsr import FRVSR, FRVSRConfig
from proxy.app import ProxyConfig, serve
from proxy.backend import Health, Reply
from serving.torchserve import free_port
from testing.browser import chromium, missing
from testing.clips import make_video
from testing.services import needs_java, tiny_checkpoint, tiny_service
from video.pipeline import open_job, upscale_video
from video.settings import HandlerSettings
from wire.contract import FORMAT_HEADER, PAGE_PATH, PREDICT_PATH, TIMING_HEADER

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"no headless Chromium: {missing()}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def js(driver, expr: str):
    return driver.execute_script(f"return {expr};")


def visible(driver, element_id: str) -> bool:
    return js(driver, f"!document.getElementById('{element_id}').hidden")


def wait_for(driver, cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} within {timeout:.0f} s; page says: {js(driver, 'document.body.innerText')[:800]}"
            )
        time.sleep(0.1)


def upload(driver, url: str, path: Path) -> None:
    driver.get(url + PAGE_PATH)
    wait_for(
        driver,
        lambda: "Limits: frames up to" in js(driver, "document.getElementById('limits').textContent"),
        20,
        "limits shown",
    )
    driver.find_element("id", "file").send_keys(str(path))


def videos(driver) -> dict:
    """What the two <video> elements report once both have their metadata."""
    wait_for(
        driver,
        lambda: js(
            driver,
            "document.getElementById('after').readyState >= 2 && document.getElementById('before').readyState >= 2",
        ),
        30,
        "both videos loaded",
    )
    return js(
        driver,
        "(() => { const a = document.getElementById('after'), b = document.getElementById('before'); return "
        "{aw: a.videoWidth, ah: a.videoHeight, ad: a.duration, "
        "bw: b.videoWidth, bh: b.videoHeight, bd: b.duration}; })()",
    )


def not_blank(png: bytes) -> float:
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return float(img.std())


def check_result(driver, frames: int, fps: int) -> None:
    v = videos(driver)
    assert (v["aw"], v["ah"]) == (4 * v["bw"], 4 * v["bh"]), v
    assert abs(v["ad"] - v["bd"]) <= 0.5 / fps, v  # same duration (to half a frame)
    info = js(driver, "document.getElementById('info').textContent")
    assert f"Output {v['aw']}x{v['ah']}, {frames} frames, {fps} fps" in info and "server time" in info, info
    assert js(driver, "document.getElementById('download').download").endswith("_x4.mp4")
    assert not_blank(driver.find_element("id", "after").screenshot_as_png) > 10  # real picture, not an empty box
    assert not visible(driver, "error")


# ----------------------------------------------------------------------------- the real service


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The tiny default, and a second tiny model and the shipped GAN beside it for the model picker."""
    folder = tmp_path_factory.mktemp("web")
    other = tiny_checkpoint(folder, "other.pth", FRVSRConfig(channels=4, blocks=1, fnet_channels=4, residual=False))
    extra = ("--response_timeout", "120", "--extra_model", f"other={other}", "--extra_model", "gan")
    svc = tiny_service(folder, extra=extra)
    yield svc
    svc.stop()


def choose(driver, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", select_id)).select_by_value(value)


def run_job(driver) -> None:
    driver.find_element("id", "upscale").click()
    wait_for(driver, lambda: not js(driver, "window.frvsr.busy"), 120, "the job to finish")
    assert visible(driver, "result"), js(driver, "document.getElementById('error').innerText")


def uniform_blocks(driver, canvas_id: str, block: int) -> float:
    """Share of the loupe's ``block`` x ``block`` tiles (from its top-left) that hold a single colour."""
    data = js(
        driver,
        f"Array.from(document.getElementById('{canvas_id}').getContext('2d').getImageData(0, 0, 160, 160).data)",
    )
    img = np.array(data, np.uint8).reshape(160, 160, 4)[:, :, :3].astype(int)
    n = 160 // block
    tiles = img[: n * block, : n * block].reshape(n, block, n, block, 3)
    same = (tiles.max(axis=(1, 3)) == tiles.min(axis=(1, 3))).all(axis=-1)
    assert img.std() > 1, "the loupe is blank"
    return float(same.mean())


@pytest.mark.slow
@needs_java
def test_page_model_and_quality_pickers_loupe_frame_steps_and_one_clock(browser, service, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    clip = tmp_path / "moving.mp4"
    clip.write_bytes(make_video("mp4_h264", frames=120, width=64, height=48, fps=25))  # 4.8 s
    upload(browser, service.url, clip)
    wait_for(browser, lambda: not js(browser, "window.frvsr.busy"), 120, "the first job")
    wait_for(browser, lambda: js(browser, "document.getElementById('model').options.length") == 3, 20, "three models")
    about = "document.getElementById('model-about').textContent"
    choose(browser, "model", "gan")  # the sharp choice says what it is for
    assert js(browser, about).startswith("sharp: FRVSR_GAN"), js(browser, about)
    choose(browser, "model", "")
    assert js(browser, about) == ""  # the tiny default is no shipped file: nothing to say
    sizes = {}
    for crf in ("10", "28"):
        choose(browser, "model", "other")
        choose(browser, "crf", crf)
        run_job(browser)
        sizes[crf] = js(browser, "document.getElementById('download').href && window.frvsr.outputBytes")
    assert sizes["10"] > sizes["28"] > 0, sizes  # a lower CRF: a larger file
    assert js(browser, "document.getElementById('after-label').textContent").startswith("other 4×")
    assert js(browser, "document.getElementById('before-label').textContent").startswith("Input, scaled by the browser")

    # the loupe: nearest-neighbour pixels, 4x on the 4x frame, 16x on the input, at the same place
    after = browser.find_element("id", "after")
    ActionChains(browser).move_to_element_with_offset(after, 10, 5).perform()
    wait_for(browser, lambda: visible(browser, "loupe-after") and visible(browser, "loupe-before"), 10, "both loupes")
    assert uniform_blocks(browser, "loupe-after", 4) == 1.0
    assert uniform_blocks(browser, "loupe-before", 16) == 1.0
    assert uniform_blocks(browser, "loupe-after", 8) < 0.9  # it is the 4x frame's own detail, not the input's

    # five seconds of play: the two pictures show the same frame, or the input the frame before while its seek to
    # the 4x video's new frame lands (sampled, about half the time on this box: the median sample was 0 in some
    # runs and one frame in others, in the working tree and in a clean clone alike); never more than a moment of
    # 0-3 frames on a loaded box
    browser.find_element("id", "prev").click()  # paused on a frame
    browser.find_element("id", "play").click()
    time.sleep(5)
    gaps = []
    for _ in range(20):
        gaps.append(js(browser, "Math.abs(window.frvsr.shown.after - window.frvsr.shown.before)"))
        time.sleep(0.05)
    frame = js(browser, "window.frvsr.frameDur")
    assert min(gaps) < frame / 2 and sorted(gaps)[10] <= frame + 1e-3 and max(gaps) <= 4 * frame + 1e-3, (gaps, frame)

    # frame steps move both videos to the same frame
    browser.find_element("id", "play").click()  # pause
    body = browser.find_element("tag name", "body")
    start = js(browser, "Math.round(window.frvsr.shown.after / window.frvsr.frameDur)")
    for _ in range(3):
        body.send_keys(".")
        time.sleep(0.3)
    wait_for(
        browser,
        lambda: js(browser, "Math.abs(frvsr.shown.after - frvsr.shown.before) < frvsr.frameDur / 2"),
        10,
        "both on the same frame",
    )
    now = js(browser, "Math.round(window.frvsr.shown.after / window.frvsr.frameDur)")
    assert now == start + 3 or (start > 116 and now == 119), (start, now)
    browser.find_element("id", "save-frame").click()
    wait_for(browser, lambda: js(browser, "window.frvsr.lastFrame !== null"), 10, "the saved frame")
    saved = js(browser, "window.frvsr.lastFrame")
    assert (saved["width"], saved["height"]) == (256, 192) and saved["bytes"] > 1000 and saved["name"].endswith(".png")


@pytest.mark.slow
@needs_java
def test_page_upscales_a_clip_and_plays_it_in_sync(browser, service, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(make_video("mp4_h264", frames=45, width=96, height=64, fps=15))
    t = time.monotonic()
    upload(browser, service.url, clip)
    wait_for(browser, lambda: visible(browser, "result") or visible(browser, "error"), 120, "a result or an error")
    assert visible(browser, "result"), js(browser, "document.getElementById('error').innerText")
    check_result(browser, 45, 15)
    browser.find_element("id", "mode-wipe").click()
    assert js(browser, "document.getElementById('stage').className") == "wipe"
    assert not_blank(browser.find_element("id", "stage").screenshot_as_png) > 10
    print(f"page: {time.monotonic() - t:.1f} s from opening to the result")


@pytest.mark.slow
@needs_java
def test_page_says_a_text_file_is_not_a_video(browser, service, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("Dear user, this is plain text and not a video.\n" * 20)
    upload(browser, service.url, text)
    wait_for(browser, lambda: visible(browser, "error"), 60, "an error")
    title = js(browser, "document.getElementById('error-title').textContent")
    detail = js(browser, "document.getElementById('error-detail').textContent")
    assert title.startswith("This file is not a video the server can read") and "not a video FFmpeg can read" in detail
    assert not visible(browser, "result") and not visible(browser, "progress")
    assert js(browser, "document.getElementById('upscale').disabled") is False  # ready for another try


# ----------------------------------------------------------------------------- the seam: no TorchServe


class InProcessBackend:
    """The handler's pipeline in this process (tiny model) behind the Backend protocol; ``gate`` holds the
    first request until the test opens it."""

    def __init__(self):
        self.net = FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)).eval()
        self.settings = HandlerSettings.from_dict({"torch_threads": 1, "x264_preset": "ultrafast"})
        self.gate: asyncio.Event | None = None
        self.calls = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    model = "in-process"

    async def predict(self, body: bytes, timeout_s: float, model: str | None = None) -> Reply:
        self.calls += 1
        if self.calls == 1 and self.gate is not None:
            await self.gate.wait()
        res = await asyncio.to_thread(self._run, body)
        return Reply(200, res.video, {TIMING_HEADER: res.timings.header(), FORMAT_HEADER: res.family})

    def _run(self, body: bytes):
        job = open_job(body, self.settings)
        try:
            res = upscale_video(self.net, job.reader, self.settings, job.out_format)
        finally:
            job.reader.close()
        res.video = base64.b64encode(res.video)
        return res

    async def health(self) -> Health:
        return Health(True, {"backend": "in-process"}, "ok")

    async def models(self) -> dict[str, dict]:
        return {self.model: {"ready": True}}


@contextlib.contextmanager
def proxy_thread(backend, **cfg_kw):
    """The proxy in front of ``backend`` on a free port, in a thread with its own event loop."""
    port, started, loop_box = free_port(), threading.Event(), {}
    limits = {"max_pixels": 40000, "max_seconds": 5.0, "max_frames": 300, "max_body_bytes": 2**24}

    def run():
        async def main():
            loop_box["loop"] = asyncio.get_running_loop()
            loop_box["stop"] = asyncio.Event()
            runner = await serve(ProxyConfig(limits=limits, **cfg_kw), backend, "127.0.0.1", port)
            started.set()
            await loop_box["stop"].wait()
            await runner.cleanup()

        asyncio.run(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{port}", loop_box["loop"]
    finally:
        loop_box["loop"].call_soon_threadsafe(loop_box["stop"].set)
        t.join(10)


@pytest.mark.slow  # starts Chromium (a subprocess)
def test_page_works_against_another_backend_and_shows_the_queue(browser, tmp_path):
    backend = InProcessBackend()
    clip = tmp_path / "clip.mp4"
    video = make_video("mp4_h264", frames=20, width=64, height=48, fps=20)
    clip.write_bytes(video)
    with proxy_thread(backend, max_inflight=1) as (url, loop):
        backend.gate = asyncio.Event()
        first: dict = {}
        blocker = threading.Thread(
            target=lambda: first.update(
                r=requests.post(url + PREDICT_PATH, json={"content": base64.b64encode(video).decode()}, timeout=60)
            )
        )
        blocker.start()
        wait_for(browser, lambda: backend.calls == 1, 10, "the first request at the backend")
        upload(browser, url, clip)
        wait_for(
            browser,
            lambda: "position 2 (1 ahead)" in js(browser, "document.getElementById('detail').textContent"),
            20,
            "the queue position shown",
        )
        assert "Processing" in js(browser, "document.getElementById('phase').textContent")
        eta = [js(browser, "document.getElementById('eta').textContent")]
        time.sleep(2.2)
        eta.append(js(browser, "document.getElementById('eta').textContent"))
        left = [int(t.split()[1]) for t in eta]  # "About N s left"
        assert all(t.startswith("About ") for t in eta) and left[1] <= left[0] - 2, eta  # it counts down
        loop.call_soon_threadsafe(backend.gate.set)
        blocker.join(60)
        assert first["r"].status_code == 200
        wait_for(browser, lambda: visible(browser, "result") or visible(browser, "error"), 60, "a result or an error")
        assert visible(browser, "result"), js(browser, "document.getElementById('error').innerText")
        check_result(browser, 20, 20)
