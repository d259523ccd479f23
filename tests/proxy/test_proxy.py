"""The front door (proxy/app.py) against a fake backend, with no TorchServe: envelope, validation, the queue,
timeouts, health, the page. This fake is the seam's test double: everything past ``Backend`` is tested against
the real TorchServe in test_serving.py, test_bad_input.py and test_web.py."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time

import pytest
from aiohttp import ClientSession

from proxy.app import Lane, ProxyConfig, WaitingRoom, serve
from proxy.backend import Health, Reply, TokenSource, TorchServeBackend
from serving.torchserve import free_port
from testing.clips import make_video
from wire.contract import HEALTH_PATH, MODELS_PATH, PREDICT_PATH, QUEUE_PATH, REQUEST_ID_HEADER, TIMING_HEADER

TIMING = "open=0.001;decode=0.100;model=1.000;encode=0.200;total=1.300;frames=10"


def body_of(tag: str) -> dict:
    return {"content": base64.b64encode(f"video {tag}".encode()).decode()}


class FakeBackend:
    """Answers every request with its content reversed after ``delay`` s (within the timeout); ``gate`` holds
    answers until it is set; records what arrived in order."""

    model = "fake"

    def __init__(self):
        self.seen: list[str] = []
        self.models_seen: list[str | None] = []
        self.served: dict[str, dict] = {"fake": {"ready": True}}
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.reply: Reply | None = None
        self.ready = True
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def predict(self, body: bytes, timeout_s: float, model: str | None = None) -> Reply:
        content = json.loads(body)["content"]
        self.seen.append(base64.b64decode(content).decode(errors="replace"))
        self.models_seen.append(model)
        if self.gate is not None:  # held until the test opens it, whatever the timeout
            await self.gate.wait()
        async with asyncio.timeout(timeout_s):
            await asyncio.sleep(self.delay)
        if self.reply is not None:
            return self.reply
        return Reply(200, content[::-1].encode(), {TIMING_HEADER: TIMING, "X-FRVSR-Model": "fake/1.0"})

    async def health(self) -> Health:
        return Health(self.ready, {"backend": "fake"}, "ok" if self.ready else "the model is not ready: fake")

    async def models(self) -> dict[str, dict]:
        return self.served


def run(scenario, backend=None, **cfg_kw):
    """Start the proxy in front of ``backend`` (a FakeBackend by default); ``await scenario(fake, url, session)``."""

    async def main():
        fake = backend or FakeBackend()
        cfg = ProxyConfig(**{"timeout_s": 5, "limits": {"max_pixels": 40000}, **cfg_kw})
        port = free_port()
        runner = await serve(cfg, fake, "127.0.0.1", port)
        try:
            async with ClientSession() as s:
                return await scenario(fake, f"http://127.0.0.1:{port}", s)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


async def post(s, url, payload=None, headers=None, **kw):
    async with s.post(url + PREDICT_PATH, json=payload, headers=headers, **kw) as r:
        return r.status, await r.json(), dict(r.headers)


async def get_json(s, url, path):
    async with s.get(url + path) as r:
        return r.status, await r.json()


async def until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- route and envelope


def test_success_envelope_headers_and_backend_lifecycle():
    async def scenario(fake, url, s):
        assert fake.started
        status, body, headers = await post(s, url, body_of("a"))
        assert status == 200 and set(body) == {"code", "data", "msg"} and body["code"] == 200 and body["msg"] == "ok"
        assert body["data"]["content"] == body_of("a")["content"][::-1]
        assert isinstance(body["data"]["elapsed_time"], float) and body["data"]["elapsed_time"] >= 0
        assert headers[TIMING_HEADER] == TIMING and headers["X-FRVSR-Model"] == "fake/1.0"
        return fake

    assert run(scenario).closed


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"data": b"not json at all"}, "not valid JSON"),
        ({"json": {"video": "AAAA"}}, 'missing "content"'),
        ({"json": {"content": 12}}, "must be a base64 string"),
        ({"json": {"content": "!!!not base64!!!"}}, "not valid base64"),
        ({"json": ["content"]}, "JSON object"),
        ({"json": "AAAA"}, "must be a JSON object"),
    ],
)
def test_bad_requests_never_reach_the_backend(kw, words):
    async def scenario(fake, url, s):
        async with s.post(url + PREDICT_PATH, **kw) as r:
            body = await r.json()
        assert (r.status, body["code"], body["data"]) == (400, 400, None) and words in body["msg"]
        assert fake.seen == []

    run(scenario)


def test_backend_errors_and_timeouts_use_the_envelope():
    async def scenario(fake, url, s):
        fake.reply = Reply(422, "duration 7.000 s is over the limit of 5 s (max_seconds)", {})
        status, body, _ = await post(s, url, body_of("x"))
        assert (status, body["code"], body["data"]) == (422, 422, None) and "max_seconds" in body["msg"]
        fake.reply, fake.delay = None, 2.0
        t = time.perf_counter()
        status, body, _ = await post(s, url, body_of("slow"))
        assert status == 504 and "no answer from the model within" in body["msg"]
        assert 0.4 <= time.perf_counter() - t < 1.2  # at the limit, not the model's 2 s

    run(scenario, timeout_s=0.4)


def test_method_path_and_size_errors_use_the_envelope():
    async def scenario(fake, url, s):
        async with s.get(url + PREDICT_PATH) as r:
            assert r.status == 405 and (await r.json())["code"] == 405 and "POST" in r.headers["Allow"]
        async with s.post(url + "/nope", json={}) as r:
            assert r.status == 404 and (await r.json())["code"] == 404
        async with s.get(url + "/static/../app.py") as r:
            assert r.status in (403, 404) and (await r.json())["code"] == r.status
        port = int(url.rsplit(":", 1)[1])
        status, body = await asyncio.to_thread(_headers_only_post, port, 10**9)
        assert status == 413 and json.loads(body)["code"] == 413 and "over the limit" in json.loads(body)["msg"]
        assert fake.seen == []

    run(scenario, max_body_bytes=1000)


def test_page_and_its_files_are_served():
    async def scenario(fake, url, s):
        async with s.get(url + "/") as r:
            html = await r.text()
            assert r.status == 200 and r.content_type == "text/html"
        assert "<button" in html and ">Upscale</button>" in html and "/static/app.js" in html
        assert "http://" not in html and "https://" not in html  # nothing from the internet
        for name, kind in (("app.js", "javascript"), ("style.css", "css")):
            async with s.get(url + "/static/" + name) as r:
                text = await r.text()
                assert r.status == 200 and kind in r.content_type and len(text) > 500
                assert "https://" not in text and "http://" not in text
        _, body = await get_json(s, url, HEALTH_PATH)
        assert body["data"]["limits"] == {"max_pixels": 40000}

    run(scenario)


# ----------------------------------------------------------------------------- the queue


def test_requests_beyond_the_slots_wait_in_arrival_order_and_all_succeed():
    async def scenario(fake, url, s):
        fake.gate = asyncio.Event()
        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(post(s, url, body_of(str(i)), headers={REQUEST_ID_HEADER: f"id{i}"})))
            if i == 0:
                await until(lambda: len(fake.seen) == 1)
            await asyncio.sleep(0.05)  # arrival order = creation order
        _, q = await get_json(s, url, f"{QUEUE_PATH}?request=id3")
        assert q["data"]["state"] == "waiting" and q["data"]["position"] == 3 and q["data"]["waiting"] == 4
        assert q["data"]["estimated_wait_s"] > 0
        _, first = await get_json(s, url, f"{QUEUE_PATH}?request=id0")
        assert first["data"]["state"] == "running" and first["data"]["position"] == 0
        _, h = await get_json(s, url, HEALTH_PATH)
        queue = h["data"]["queue"]
        assert (
            queue["waiting"] == 4
            and queue["running"] == 1
            and queue["bytes_waiting"] > 0
            and queue["estimated_wait_s"] > 0
        )
        assert h["data"]["inflight"] == 5
        fake.gate.set()
        results = await asyncio.gather(*tasks)
        assert [r[0] for r in results] == [200] * 5
        assert [r[1]["data"]["content"] for r in results] == [body_of(str(i))["content"][::-1] for i in range(5)]
        assert fake.seen == [f"video {i}" for i in range(5)]
        _, h = await get_json(s, url, HEALTH_PATH)
        assert h["data"]["queue"]["waiting"] == 0 and h["data"]["inflight"] == 0
        _, gone = await get_json(s, url, f"{QUEUE_PATH}?request=id3")
        assert gone["data"]["state"] == "unknown"

    run(scenario, max_inflight=1)


def test_past_the_count_bound_503_with_retry_after_then_healthy():
    async def scenario(fake, url, s):
        fake.gate = asyncio.Event()
        held = [asyncio.create_task(post(s, url, body_of(str(i)))) for i in range(3)]  # 1 running + 2 waiting
        await until(lambda: len(fake.seen) == 1)
        await asyncio.sleep(0.1)
        status, body, headers = await post(s, url, body_of("extra"))
        assert status == 503 and body["code"] == 503 and body["data"] is None
        assert "queue is full" in body["msg"] and "retry in" in body["msg"]
        assert int(headers["Retry-After"]) >= 1
        fake.gate.set()
        assert [r[0] for r in await asyncio.gather(*held)] == [200, 200, 200]
        assert (await post(s, url, body_of("after")))[0] == 200
        assert "video extra" not in fake.seen

    run(scenario, max_inflight=1, max_queued=2)


def test_bytes_bound_refuses_only_when_others_wait():
    big = {"content": base64.b64encode(b"x" * 3000).decode()}  # ~4 kB bodies against a 5 kB bound

    async def scenario(fake, url, s):
        fake.gate = asyncio.Event()
        running = asyncio.create_task(post(s, url, big))
        await until(lambda: len(fake.seen) == 1)
        waiting = asyncio.create_task(post(s, url, big))  # alone in the waiting room: admitted whatever its size
        await until(lambda: True)
        await asyncio.sleep(0.2)
        status, body, headers = await post(s, url, big)
        assert status == 503 and "MiB" in body["msg"] and "Retry-After" in headers
        fake.gate.set()
        assert (await running)[0] == 200 and (await waiting)[0] == 200

    run(scenario, max_inflight=1, max_queued_bytes=5000)


def test_the_wait_counts_toward_the_timeout():
    async def scenario(fake, url, s):
        fake.gate = asyncio.Event()
        first = asyncio.create_task(post(s, url, body_of("first")))
        await until(lambda: len(fake.seen) == 1)
        t = time.perf_counter()
        status, body, _ = await post(s, url, body_of("second"))
        assert status == 504 and "in the queue" in body["msg"] and 0.4 <= time.perf_counter() - t < 1.2
        fake.gate.set()
        assert (await first)[0] == 200
        fake.gate = None
        assert (await post(s, url, body_of("third")))[0] == 200  # slots were freed
        assert fake.seen == ["video first", "video third"]

    run(scenario, max_inflight=1, timeout_s=0.4)


def test_long_request_does_not_block_health_or_validation():
    async def scenario(fake, url, s):
        fake.gate = asyncio.Event()  # the model server holds the request until the checks below are done
        slow = asyncio.create_task(post(s, url, body_of("slow")))
        await until(lambda: len(fake.seen) == 1)
        t = time.perf_counter()
        async with asyncio.timeout(5):  # a proxy that made them wait for the held request would never answer
            status, h = await get_json(s, url, HEALTH_PATH)
            assert status == 200 and h["data"]["inflight"] == 1 and h["data"]["backend"] == "fake"
            assert (await post(s, url, {"content": 1}))[0] == 400 and time.perf_counter() - t < 1.0
        assert not slow.done()
        fake.gate.set()
        assert (await slow)[0] == 200

    run(scenario)


def test_health_is_503_until_the_backend_is_ready():
    async def scenario(fake, url, s):
        fake.ready = False
        status, body = await get_json(s, url, HEALTH_PATH)
        assert status == 503 and body["code"] == 503 and "not ready" in body["msg"] and "queue" in body["data"]
        fake.ready = True
        assert (await get_json(s, url, HEALTH_PATH))[0] == 200

    run(scenario)


def test_waiting_room_estimates_from_recent_clips():
    async def scenario():
        room = WaitingRoom(slots=2, max_waiting=3, max_bytes=10**6, workers=1, clip_seconds_hint=7.0)
        assert room.estimated_wait(0) == 0 and room.estimated_wait(2) == 14.0
        for s in (2.0, 4.0):
            room.record(s)
        assert room.seconds_per_clip() == 3.0
        tickets = [room.admit(10) for _ in range(5)]  # 2 slots free + 3 waiting places
        with pytest.raises(Exception, match="queue is full") as e:
            room.admit(10)
        assert e.value.retry_after == 15  # 5 ahead x 3 s per clip / 1 worker
        for t in tickets:
            room.leave(t)
        assert room.status()["waiting"] == 0

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- TorchServeBackend without a server


def test_torchserve_down_is_503_and_health_says_unreachable():
    async def scenario(fake, url, s):
        status, body, _ = await post(s, url, body_of("a"))
        assert status == 503 and "not reachable" in body["msg"]
        status, h = await get_json(s, url, HEALTH_PATH)
        assert status == 503 and h["data"]["torchserve"] == "unreachable"

    dead = f"http://127.0.0.1:{free_port()}"
    run(scenario, backend=TorchServeBackend("m", dead, dead, key_file=None))


def test_failed_key_renewal_is_not_logged_as_renewed(tmp_path, caplog):
    key_file = tmp_path / "key_file.json"
    key_file.write_text(
        json.dumps({"inference": {"key": "old", "expiration time": "2000-01-01T00:00:00.0Z"}, "API": {"key": "api"}})
    )

    async def scenario():
        tokens = TokenSource(key_file, f"http://127.0.0.1:{free_port()}")
        async with ClientSession() as s:
            assert tokens.expiring("inference") is False  # nothing read yet
            key = await tokens.inference_key(s)  # expired: renewal is tried and fails (no TorchServe)
        return key

    with caplog.at_level(logging.INFO, logger="proxy.backend"):
        assert asyncio.run(scenario()) == "old"
    assert "renewing the inference key failed" in caplog.text and "inference key renewed" not in caplog.text


def _headers_only_post(port: int, length: int) -> tuple[int, bytes]:
    """Announce a huge body and send none of it: the answer must come from the Content-Length alone."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


# ----------------------------------------------------------------------------- several models


def test_a_named_model_is_routed_and_an_unknown_one_is_a_400_listing_the_served():
    async def scenario(fake, url, s):
        fake.served = {"fake": {"ready": True}, "teacher": {"ready": True}}
        status, body, _ = await post(s, url, {**body_of("t"), "model": "teacher"})
        assert status == 200
        status, body, _ = await post(s, url, {**body_of("d"), "model": "fake"})  # the default by name
        assert status == 200 and fake.models_seen == ["teacher", None]
        status, body, _ = await post(s, url, {**body_of("x"), "model": "nope"})
        assert status == 400 and "unknown \"model\" 'nope'" in body["msg"] and "['fake', 'teacher']" in body["msg"]
        assert fake.seen == ["video t", "video d"]
        status, listed = await get_json(s, url, MODELS_PATH)
        assert status == 200 and listed["data"]["default"] == "fake"
        models = {m["name"]: m for m in listed["data"]["models"]}
        assert list(models) == ["fake", "teacher"] and models["teacher"]["timeout_s"] == 99.0
        assert models["fake"]["default"] and not models["teacher"]["default"]

    run(scenario, models={"teacher": Lane(timeout_s=99.0, max_inflight=1, max_queued=1)})


def test_a_slow_model_does_not_hold_up_the_default():
    """The teacher's one slot is taken and its queue is full: a default request still goes straight through."""

    async def scenario(fake, url, s):
        gate = asyncio.Event()
        answer = fake.predict

        async def predict(body, timeout_s, model=None):
            if model == "teacher":  # held until the end
                fake.seen.append("teacher")
                await gate.wait()
                return Reply(200, b"T", {})
            return await answer(body, timeout_s, model)

        fake.predict = predict
        fake.served = {"fake": {"ready": True}, "teacher": {"ready": True}}
        slow = [asyncio.create_task(post(s, url, {**body_of(f"t{i}"), "model": "teacher"})) for i in range(2)]
        await until(lambda: fake.seen.count("teacher") == 1)
        await asyncio.sleep(0.2)
        status, body, _ = await post(s, url, {**body_of("t2"), "model": "teacher"})
        assert status == 503 and body["msg"].startswith("teacher: the queue is full"), body
        t = time.perf_counter()
        assert (await post(s, url, body_of("default")))[0] == 200 and time.perf_counter() - t < 2.0
        gate.set()
        assert [r[0] for r in await asyncio.gather(*slow)] == [200, 200]

    run(scenario, max_inflight=1, models={"teacher": Lane(timeout_s=30, max_inflight=1, max_queued=1)})


def test_time_left_counts_down_from_the_clips_frames_and_size():
    """A real clip's header gives its pixel-frames; after one timed request the estimate follows the model's
    seconds per pixel-frame: the queue ahead, then its own clip."""
    clip = {"content": base64.b64encode(make_video("mp4_h264", frames=10, width=32, height=32)).decode()}

    async def scenario(fake, url, s):
        assert (await post(s, url, clip))[0] == 200  # timed: total=1.300 s for 10 x 32 x 32 (the fake's header)
        fake.gate = asyncio.Event()
        first = asyncio.create_task(post(s, url, clip))
        await until(lambda: len(fake.seen) == 2)
        second = asyncio.create_task(post(s, url, clip, headers={REQUEST_ID_HEADER: "r2"}))
        await asyncio.sleep(0.3)
        status, q = await get_json(s, url, QUEUE_PATH + "?request=r2")
        left = q["data"]["estimated_time_left_s"]
        assert status == 200 and q["data"]["state"] == "waiting" and q["data"]["model"] == "fake"
        assert 1.3 < left < 2.6, q  # the first's remaining (1.3 s less ~0.3 s) and its own 1.3 s
        await asyncio.sleep(0.5)
        later = (await get_json(s, url, QUEUE_PATH + "?request=r2"))[1]["data"]["estimated_time_left_s"]
        assert later < left - 0.3
        status, listed = await get_json(s, url, MODELS_PATH)
        (m,) = listed["data"]["models"]
        per_frame = 1.3 / 10 * 176 * 144 / 1024  # one clip timed: its rate per pixel-frame
        assert m["measured_from"] == "requests" and abs(m["seconds_per_frame_176x144"] - per_frame) < 0.01
        fake.gate.set()
        assert (await first)[0] == 200 and (await second)[0] == 200

    run(scenario, max_inflight=1, workers=1)
