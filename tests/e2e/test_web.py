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
from testing.services import needs_java, tiny_service
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
    svc = tiny_service(tmp_path_factory.mktemp("web"))
    yield svc
    svc.stop()


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
        self.model = FRVSR(FRVSRConfig(channels=8, blocks=1, fnet_channels=4)).eval()
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
            res = upscale_video(self.model, job.reader, self.settings, job.out_format)
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
        loop.call_soon_threadsafe(backend.gate.set)
        blocker.join(60)
        assert first["r"].status_code == 200
        wait_for(browser, lambda: visible(browser, "result") or visible(browser, "error"), 60, "a result or an error")
        assert visible(browser, "result"), js(browser, "document.getElementById('error').innerText")
        check_result(browser, 20, 20)
