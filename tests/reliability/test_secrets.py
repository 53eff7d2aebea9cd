"""Access keys and tokens never appear in logs, even at DEBUG, in the engine's or the SDK's."""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp
import pytest
import websockets

from iii import HttpRequest, InitOptions, register_worker
from iii.protocol.refs import channel_url
from iii.testing import EngineProcess
from tests.http.conftest import bind


async def test_keys_and_tokens_stay_out_of_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token, wrong_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    seen_keys: list[str] = []
    with EngineProcess(["--token", token, "--log-level", "DEBUG"]) as engine:
        client = register_worker(engine.url, InitOptions(token=token, worker_name="secrets"))
        try:
            channel = await client.create_channel_async()
            seen_keys += [channel.writer_ref.access_key, channel.reader_ref.access_key]
            await channel.writer.write(b"data")
            await channel.writer.close_async()
            assert await channel.reader.read_all() == b"data"

            async def upload(data: dict[str, object]) -> dict[str, int]:
                request = HttpRequest.of(data)
                seen_keys.append(request.request_body.ref.access_key)
                seen_keys.append(request.response.writer.ref.access_key)
                return {"bytes": len(await request.request_body.read_all())}

            bind(client, "secrets.upload", upload, "POST", "/upload")
            # In async code trigger returns an awaitable: await the listing, so the route is bound before use.
            await client.trigger_async({"function_id": "engine::triggers::list", "payload": {}})
            async with aiohttp.ClientSession() as http:
                headers = {"Authorization": f"Bearer {wrong_token}"}
                async with http.post(f"{engine.http_url}/upload", data=b"x" * 1000, headers=headers) as response:
                    assert await response.json() == {"bytes": 1000}
            # Attempts with wrong keys and tokens are logged as refusals, without the secrets.
            other = await client.create_channel_async()
            seen_keys += [other.writer_ref.access_key, other.reader_ref.access_key]
            wrong_key = secrets.token_urlsafe(24)
            with pytest.raises(websockets.InvalidStatus):
                url = channel_url(engine.url, other.reader_ref.channel_id, wrong_key, "read")
                await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
            bad_token = {"Authorization": "Bearer " + wrong_token}
            async with websockets.connect(engine.url, additional_headers=bad_token) as refused:
                with pytest.raises(websockets.ConnectionClosed):
                    await refused.recv()
            seen_keys.append(wrong_key)
            # A malformed request whose oversized header holds a token: the error log names only the problem.
            host, port = engine.http_url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET / HTTP/1.1\r\nAuthorization: Bearer " + token.encode() + b"a" * 9000 + b"\r\n\r\n")
            assert (await reader.readline()).split()[1] == b"400"
            writer.close()
        finally:
            client.shutdown()
        engine_log = engine.log_text()
    # Our SDK's records, and those of picows, which it drives (the test's own websockets client is not ours).
    sdk_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("iii", "picows")))
    assert sdk_log
    assert "refused a worker" in engine_log  # the refusal itself is logged
    for secret in [token, wrong_token, *seen_keys]:
        assert secret not in engine_log, "a secret is in the engine's log"
        assert secret not in sdk_log, "a secret is in the SDK's log"
