"""The /autotable/predict proxy against a fake TorchServe: envelope, status mapping, tokens, concurrency."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import ClientSession, web

from proxy.app import ProxyConfig, serve
from serving.torchserve import free_port

GOOD = {"content": base64.b64encode(b"RIFF....AVI video bytes").decode()}


class FakeTorchServe:
    """Inference + management + token API on one port; behaviour switchable per test."""

    def __init__(self, key_file):
        self.key_file = key_file
        self.calls = 0
        self.status, self.body, self.delay = 200, b"T1VUUFVU", 0.0
        self.ready = True
        self.reject_keys: set[str] = set()
        self.seen_keys: list[str] = []
        self.renewals = 0
        self.write_keys("inf-1", minutes=60)

    def write_keys(self, inference: str, minutes: float) -> None:
        exp = (datetime.now(timezone.utc) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        self.key_file.write_text(json.dumps({
            "management": {"key": "mgmt", "expiration time": exp},
            "inference": {"key": inference, "expiration time": exp},
            "API": {"key": "api"},
        }))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=2**26)
        app.router.add_post("/predictions/{model}", self.predict)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/models/{model}", self.describe)
        app.router.add_post("/token", self.token)
        return app

    async def predict(self, request: web.Request) -> web.Response:
        self.calls += 1
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen_keys.append(key)
        await request.read()
        if key in self.reject_keys:
            return web.json_response({"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}, status=400)
        await asyncio.sleep(self.delay)
        if self.status == 200:
            return web.Response(body=self.body, headers={"X-FRVSR-Timing": "open=0.001;decode=0.100;model=1.000;encode=0.200;total=1.300;frames=10"})
        return web.json_response({"code": self.status, "type": "X", "message": f"upstream says {self.status}"}, status=self.status)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "Healthy"})

    async def describe(self, request: web.Request) -> web.Response:
        status = "READY" if self.ready else "UNLOADING"
        return web.json_response([{"modelName": "m", "modelVersion": "1.0", "workers": [{"status": status}], "jobQueueStatus": {}}])

    async def token(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer api" and request.query["type"] == "inference"
        self.renewals += 1
        self.write_keys(f"inf-{self.renewals + 1}", minutes=60)
        return web.Response(text="")


def run_with_proxy(tmp_path, scenario, **cfg_kw):
    """Start the fake upstream and the proxy, run ``await scenario(fake, url, session)``, stop both."""

    async def main():
        fake = FakeTorchServe(tmp_path / "key_file.json")
        up = web.AppRunner(fake.app())
        await up.setup()
        up_port = free_port()
        await web.TCPSite(up, "127.0.0.1", up_port).start()
        base = f"http://127.0.0.1:{up_port}"
        cfg = ProxyConfig(model="m", inference_url=base, management_url=base, key_file=tmp_path / "key_file.json", **{"timeout_s": 5, **cfg_kw})
        port = free_port()
        runner = await serve(cfg, "127.0.0.1", port)
        try:
            async with ClientSession() as s:
                return await scenario(fake, f"http://127.0.0.1:{port}", s)
        finally:
            await runner.cleanup()
            await up.cleanup()

    return asyncio.run(main())


async def _post(s, url, **kw):
    async with s.post(url + "/autotable/predict", **kw) as r:
        return r.status, await r.json(), dict(r.headers)


def test_success_envelope_and_timing(tmp_path):
    async def scenario(fake, url, s):
        status, body, headers = await _post(s, url, json=GOOD)
        assert status == 200 and body["code"] == 200 and body["msg"] == "ok"
        assert body["data"]["content"] == "T1VUUFVU"
        assert isinstance(body["data"]["elapsed_time"], float) and body["data"]["elapsed_time"] >= 0
        assert "model=1.000" in headers["X-FRVSR-Timing"]
        assert fake.seen_keys == ["inf-1"]

    run_with_proxy(tmp_path, scenario)


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"data": b"not json at all"}, "not valid JSON"),
        ({"json": {"video": "AAAA"}}, 'missing "content"'),
        ({"json": {"content": 12}}, "must be a base64 string"),
        ({"json": {"content": "!!!not base64!!!"}}, "not valid base64"),
        ({"json": ["content"]}, "JSON object"),
    ],
)
def test_bad_requests_never_reach_torchserve(tmp_path, kw, words):
    async def scenario(fake, url, s):
        status, body, _ = await _post(s, url, **kw)
        assert (status, body["code"], body["data"]) == (400, 400, None) and words in body["msg"]
        assert fake.calls == 0

    run_with_proxy(tmp_path, scenario)


@pytest.mark.parametrize("upstream,expected", [(415, 415), (422, 422), (404, 503), (503, 503), (500, 500), (507, 507)])
def test_upstream_errors_are_mapped(tmp_path, upstream, expected):
    async def scenario(fake, url, s):
        fake.status = upstream
        status, body, _ = await _post(s, url, json=GOOD)
        assert status == body["code"] == expected and body["data"] is None and body["msg"]
        if upstream in (415, 422):
            assert f"upstream says {upstream}" in body["msg"]

    run_with_proxy(tmp_path, scenario)


def test_torchserve_down_is_503(tmp_path):
    async def main():
        cfg = ProxyConfig(model="m", inference_url=f"http://127.0.0.1:{free_port()}", key_file=None)
        port = free_port()
        runner = await serve(cfg, "127.0.0.1", port)
        try:
            async with ClientSession() as s:
                status, body, _ = await _post(s, f"http://127.0.0.1:{port}", json=GOOD)
                assert status == 503 and "not reachable" in body["msg"]
                async with s.get(f"http://127.0.0.1:{port}/health") as r:
                    assert r.status == 503 and (await r.json())["data"]["torchserve"] == "unreachable"
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_timeout_is_504(tmp_path):
    async def scenario(fake, url, s):
        fake.delay = 3
        status, body, _ = await _post(s, url, json=GOOD)
        assert status == 504 and "within 1 s" in body["msg"]

    run_with_proxy(tmp_path, scenario, timeout_s=1)


def test_expired_or_rejected_inference_key_is_renewed(tmp_path):
    async def scenario(fake, url, s):
        fake.write_keys("inf-1", minutes=0.5)  # expires inside the renewal margin
        status, _, _ = await _post(s, url, json=GOOD)
        assert status == 200 and fake.renewals == 1 and fake.seen_keys[-1] == "inf-2"
        fake.reject_keys.add("inf-2")  # TorchServe rotated it behind our back
        status, _, _ = await _post(s, url, json=GOOD)
        assert status == 200 and fake.renewals == 2 and fake.seen_keys[-2:] == ["inf-2", "inf-3"]
        fake.reject_keys.update({"inf-3", "inf-4"})  # renewal does not help: a server fault, not the client's
        status, body, _ = await _post(s, url, json=GOOD)
        assert status == 503 and "inference key" in body["msg"]

    run_with_proxy(tmp_path, scenario)


def test_long_request_does_not_block_others(tmp_path):
    async def scenario(fake, url, s):
        fake.delay = 2.0
        slow = asyncio.create_task(_post(s, url, json=GOOD))
        await asyncio.sleep(0.3)
        t = time.perf_counter()
        async with s.get(url + "/health") as r:
            assert r.status == 200 and (await r.json())["data"]["inflight"] == 1
        status, _, _ = await _post(s, url, json={"content": 1})
        assert status == 400 and time.perf_counter() - t < 1.0
        assert (await slow)[0] == 200

    run_with_proxy(tmp_path, scenario)


def test_max_inflight_answers_503_at_once(tmp_path):
    async def scenario(fake, url, s):
        fake.delay = 1.5
        slow = asyncio.create_task(_post(s, url, json=GOOD))
        await asyncio.sleep(0.3)
        status, body, headers = await _post(s, url, json=GOOD)
        assert status == 503 and "busy" in body["msg"] and headers["Retry-After"]
        assert (await slow)[0] == 200

    run_with_proxy(tmp_path, scenario, max_inflight=1)


def test_health_is_503_until_model_ready(tmp_path):
    async def scenario(fake, url, s):
        fake.ready = False
        async with s.get(url + "/health") as r:
            body = await r.json()
            assert r.status == 503 and body["data"]["model"]["ready"] is False and body["data"]["torchserve"] == "Healthy"
        fake.ready = True
        async with s.get(url + "/health") as r:
            assert r.status == 200 and (await r.json())["data"]["model"]["workers"] == ["READY"]

    run_with_proxy(tmp_path, scenario)


def test_method_path_and_size_errors_use_the_envelope(tmp_path):
    async def scenario(fake, url, s):
        async with s.get(url + "/autotable/predict") as r:
            assert r.status == 405 and (await r.json())["code"] == 405 and "POST" in r.headers["Allow"]
        async with s.post(url + "/nope", json=GOOD) as r:
            assert r.status == 404 and (await r.json())["code"] == 404
        port = int(url.rsplit(":", 1)[1])
        status, body = await asyncio.to_thread(_headers_only_post, port, 10**9)
        assert status == 413 and json.loads(body)["code"] == 413 and "over the limit" in json.loads(body)["msg"]
        assert fake.calls == 0

    run_with_proxy(tmp_path, scenario, max_body_bytes=1000)


def _headers_only_post(port: int, length: int) -> tuple[int, bytes]:
    """Announce a huge body and send none of it: the answer must come from the Content-Length alone."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"POST /autotable/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
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
