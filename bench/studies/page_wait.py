"""How long a person waits on the web page: the shipped model served by client_infer.py, a 5 s 176x144 30 fps
clip chosen in a real headless Chromium, timed from choosing the file to the 4x video playing.

    python -m bench.studies.page_wait                                   # 3 runs, prints upload / processing / total
    python -m bench.studies.page_wait --screenshot docs/images/web_page.png   # also a screenshot with a real clip

The screenshot clip is the first test clip of ../shared/data/vimeo90k_sample at low resolution (the
evaluation degradation), played forwards and backwards for one second, so the page shows real content.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from common.paths import DEFAULT_MODEL, VIMEO_SAMPLE
from testing.browser import chromium, missing
from testing.clips import encode_video, moving_clip
from testing.launcher import ServiceProcess

MODEL = DEFAULT_MODEL
SHARED = VIMEO_SAMPLE


def js(driver, expr: str):
    return driver.execute_script(f"return {expr};")


def wait(driver, expr: str, timeout: float) -> float:
    """Poll ``expr`` until true; the time it became true (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while not js(driver, expr):
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {expr}; page: {js(driver, 'document.body.innerText')[:500]}")
        time.sleep(0.02)
    return time.perf_counter()


def run_once(driver, url: str, clip: Path) -> dict:
    """Open the page, choose ``clip``; seconds to upload, to process and in all until the result plays."""
    driver.get(url + "/")
    wait(driver, "document.getElementById('limits').textContent.includes('frames up to')", 30)
    t0 = time.perf_counter()
    driver.find_element("id", "file").send_keys(str(clip))
    t_up = wait(
        driver,
        "document.getElementById('phase').textContent.startsWith('Processing') "
        "|| !document.getElementById('result').hidden",
        60,
    )
    t_done = wait(
        driver,
        "!document.getElementById('result').hidden && document.getElementById('after').readyState >= 2 "
        "|| !document.getElementById('error').hidden",
        600,
    )
    if not js(driver, "document.getElementById('error').hidden"):
        raise SystemExit("the page shows an error: " + js(driver, "document.getElementById('error').innerText"))
    return {
        "upload": t_up - t0,
        "processing": t_done - t_up,
        "total": t_done - t0,
        "info": js(driver, "document.getElementById('info').textContent"),
    }


def sample_clip() -> np.ndarray:
    """The first shared test clip at low resolution, forwards then backwards (1 s at 30 fps)."""
    from model.inference import to_tensor
    from train.data import crop_to_scale, discover_samples, read_clip, read_list
    from train.evaluate import lowres_frames

    names = set(read_list(SHARED, "sep_testlist.txt"))
    sample = sorted((s for s in discover_samples(SHARED) if s.name in names), key=lambda s: s.name)[0]
    lr = lowres_frames(to_tensor(crop_to_scale(read_clip(sample))), "bicubic")
    loop = np.concatenate([lr, lr[::-1]])
    return np.concatenate([loop] * (30 // len(loop) + 1))[:30]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--screenshot", type=Path, default=None, help="also save a screenshot of the page with a result here"
    )
    a = p.parse_args(argv)
    if missing():
        raise SystemExit(f"no headless Chromium: {missing()}")
    with tempfile.TemporaryDirectory(prefix="frvsr-page-") as tmp:
        work = Path(tmp)
        clip = work / "clip_176x144_5s.mp4"
        clip.write_bytes(encode_video(moving_clip(150, 144, 176), "mp4_h264", 30))
        with ServiceProcess(MODEL.parent, MODEL.name, work, name="page").start() as svc:
            driver = chromium(work / "profile")
            try:
                runs = [run_once(driver, svc.url, clip) for _ in range(a.repeat)]
                for i, r in enumerate(runs):
                    print(
                        f"run {i + 1}: upload {r['upload']:.2f} s, processing {r['processing']:.2f} s, "
                        f"total {r['total']:.2f} s | {r['info']}"
                    )
                totals = sorted(r["total"] for r in runs)
                if totals:
                    print(
                        f"median wait {totals[len(totals) // 2]:.2f} s for a 5 s 176x144 30 fps clip "
                        "(from choosing it to the 4x video playing)"
                    )
                if a.screenshot:
                    real = work / "vimeo_sample_lowres.mp4"
                    real.write_bytes(
                        encode_video(sample_clip(), "mp4_h264", 30, options={"crf": "12", "preset": "veryfast"})
                    )
                    run_once(driver, svc.url, real)
                    driver.set_window_size(1280, 900)
                    driver.execute_script(
                        "const a = document.getElementById('after'), b = document.getElementById('before');"
                        "a.pause(); b.pause(); a.currentTime = 0.5; b.currentTime = 0.5;"
                    )
                    time.sleep(1.0)
                    from selenium.webdriver.common.action_chains import ActionChains

                    after = driver.find_element("id", "after")  # the loupe, at a detailed spot of the picture
                    size = after.size
                    ActionChains(driver).move_to_element_with_offset(
                        after, int(size["width"] * 0.12), int(-size["height"] * 0.1)
                    ).perform()
                    time.sleep(0.5)
                    a.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    driver.save_screenshot(str(a.screenshot))
                    print(f"wrote {a.screenshot}")
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
