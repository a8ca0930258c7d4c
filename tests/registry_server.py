"""A registry for the tests: the Ollama/Docker v2 registry protocol over aiohttp on 127.0.0.1.

It speaks what pulls and pushes need (manifests, blobs with Range, uploads by POST/PATCH/PUT), can
demand a bearer token through a ``WWW-Authenticate`` challenge, can send blob downloads to a
second "blob host" by redirect, and injects faults on request: a connection dropped mid-blob, a
wrong byte, 5xx answers, a stall, a slow trickle. Every request is logged for the assertions.
It runs on its own event loop in a thread, so subprocesses and the code under test can use it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "test-token-123"


@dataclass
class Faults:
    drop_after: dict[str, int] = field(default_factory=dict)  # digest -> bytes sent before the connection dies (once)
    fail_5xx: dict[str, int] = field(default_factory=dict)  # digest -> how many 503s to answer first
    stall: dict[str, tuple[int, float]] = field(default_factory=dict)  # digest -> (bytes, seconds) (once)
    corrupt: set[str] = field(default_factory=set)  # digests served with one byte flipped
    throttle_bps: int = 0  # bytes per second for every blob download (0: full speed)
    deny_manifests: bool = False  # refuse manifest uploads with 403


@dataclass
class Logged:
    method: str
    path: str
    host: str
    range: str | None
    authorization: str | None


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    if not header or not header.startswith("bytes="):
        return None
    start_text, _, end_text = header[6:].partition("-")
    start = int(start_text)
    end = int(end_text) if end_text else size - 1
    return start, min(end, size - 1)


def verify_signature(header: str | None, signed: str, keys: dict[str, str]) -> str | None:
    """The account whose connected key made ``header`` (Ollama's ``<public key>:<signature>``) over
    ``signed``; None for a missing, malformed, forged or unconnected signature."""
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    blob, _, signature = (header or "").partition(":")
    account = keys.get(blob)
    if account is None or not signature:
        return None
    try:
        load_ssh_public_key(b"ssh-ed25519 " + blob.encode()).verify(base64.b64decode(signature), signed.encode())
    except (InvalidSignature, ValueError):
        return None
    return account


class FakeRegistry:
    """``accounts`` maps connected public keys (the base64 part of the ``ssh-ed25519`` line) to user
    names, as ollama.com does: when ``verify_keys`` is set, a token goes only to a signed request
    from a connected key; ``/api/me`` and ``DELETE /api/user/keys/...`` answer as ollama.com's."""

    def __init__(self, *, require_auth: bool = False, redirect_blobs: bool = False, verify_keys: bool = False) -> None:
        self.require_auth = require_auth
        self.verify_keys = verify_keys
        self.accounts: dict[str, str] = {}
        self.redirect_blobs = redirect_blobs
        self.faults = Faults()
        self.manifests: dict[tuple[str, str], bytes] = {}  # (repository, tag) -> bytes
        self.blobs: dict[str, bytes] = {}
        self.uploads: dict[str, bytearray] = {}
        self.files: dict[str, bytes] = {}  # plain files for direct-URL pulls, under /files/<name>
        self.log: list[Logged] = []
        self.tokens_issued = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0
        self.cdn_port = 0

    # --- content helpers ---------------------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def add_model(self, repository: str, tag: str, layers: list[tuple[str, bytes] | tuple[str, bytes, str]],
                  config: bytes = b'{"model_format":"gguf","model_family":"llama"}') -> bytes:
        """Publishes a model; returns the manifest bytes. A layer is (media type, bytes) or, for
        the layers Ollama names (``image.tensor``, ``image.json``), (media type, bytes, name)."""
        def desc(media_type: str, data: bytes, name: str = "") -> dict:
            out = {"mediaType": media_type, "digest": self.add_blob(data), "size": len(data)}
            return {**out, "name": name} if name else out

        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": desc("application/vnd.docker.container.image.v1+json", config),
                    "layers": [desc(*layer) for layer in layers]}
        raw = json.dumps(manifest).encode()
        self.manifests[(repository, tag)] = raw
        return raw

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests_for(self, digest: str) -> list[Logged]:
        return [r for r in self.log if digest in r.path]

    # --- HTTP --------------------------------------------------------------------------------------

    def _log(self, request: web.Request) -> None:
        self.log.append(Logged(request.method, request.path_qs, request.host, request.headers.get("Range"),
                               request.headers.get("Authorization")))

    def _authorized(self, request: web.Request) -> bool:
        return not self.require_auth or request.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _challenge(self, request: web.Request) -> web.Response:
        repo = f"{request.match_info.get('ns', '')}/{request.match_info.get('model', '')}"
        header = (f'Bearer realm="{self.url}/token",service="test-registry",'
                  f'scope="repository:{repo}:pull,push"')
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": header})

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        self._log(request)
        if request.path.startswith("/v2/") and not self._authorized(request):
            return self._challenge(request)
        return await handler(request)

    async def token(self, request: web.Request) -> web.Response:
        if request.query.get("service") != "test-registry" or "scope" not in request.query:
            return web.json_response({"error": "bad token request"}, status=400)
        if self.verify_keys:
            empty = base64.b64encode(hashlib.sha256(b"").hexdigest().encode()).decode()
            signed = f"GET,http://{request.host}{request.raw_path},{empty}"
            fresh = abs(time.time() - int(request.query.get("ts", "0"))) < 300 and request.query.get("nonce")
            if not fresh or verify_signature(request.headers.get("Authorization"), signed, self.accounts) is None:
                return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "unauthorized"}]},
                                         status=401)
        self.tokens_issued += 1
        return web.json_response({"token": TOKEN})

    async def get_manifest(self, request: web.Request) -> web.Response:
        key = (f"{request.match_info['ns']}/{request.match_info['model']}", request.match_info["tag"])
        raw = self.manifests.get(key)
        if raw is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]},
                                     status=404)
        return web.Response(body=raw, content_type="application/vnd.docker.distribution.manifest.v2+json")

    async def put_manifest(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.faults.deny_manifests:
            return web.json_response({"errors": [{"code": "DENIED", "message": "requested access is denied"}]},
                                     status=403)
        try:
            data = json.loads(raw)
            needed = [data["config"]["digest"]] + [layer["digest"] for layer in data["layers"]]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"errors": [{"code": "MANIFEST_INVALID", "message": "bad manifest"}]},
                                     status=400)
        if any(d not in self.blobs for d in needed):
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status=400)
        self.manifests[(f"{request.match_info['ns']}/{request.match_info['model']}", request.match_info["tag"])] = raw
        return web.Response(status=201)

    async def head_blob(self, request: web.Request) -> web.Response:
        data = self.blobs.get(request.match_info["digest"])
        if data is None:
            return web.Response(status=404)
        return web.Response(status=200, headers={"Content-Length": str(len(data))})

    async def get_blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if digest not in self.blobs:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}, status=404)
        if self.redirect_blobs:
            raise web.HTTPTemporaryRedirect(f"http://localhost:{self.cdn_port}/cdn/{digest}?signed=1")
        return await self._send_blob(request, digest, self.blobs[digest])

    async def cdn_blob(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        digest = request.match_info["digest"]
        if request.query.get("signed") != "1" or digest not in self.blobs:
            return web.Response(status=403)
        return await self._send_blob(request, digest, self.blobs[digest])

    async def get_file(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(data)), "Accept-Ranges": "bytes",
                                         "ETag": '"' + hashlib.md5(data).hexdigest() + '"'})
        return await self._send_blob(request, request.match_info["name"], data)

    async def _send_blob(self, request: web.Request, key: str, data: bytes) -> web.StreamResponse:
        f = self.faults
        if f.fail_5xx.get(key, 0) > 0:
            f.fail_5xx[key] -= 1
            return web.Response(status=503, text="try again")
        if key in f.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        rng = _parse_range(request.headers.get("Range"), len(data))
        start, end = rng if rng else (0, len(data) - 1)
        body = data[start:end + 1]
        headers = {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes"}
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        response = web.StreamResponse(status=206 if rng else 200, headers=headers)
        await response.prepare(request)
        # One-shot faults hit real downloads, not a one-byte probe.
        drop = f.drop_after.pop(key, None) if len(body) > 1 else None
        stall = f.stall.pop(key, None) if len(body) > 1 else None
        sent = 0
        step = 64 * 1024
        try:
            while sent < len(body):
                if drop is not None and sent >= drop:
                    request.transport.abort()  # the connection dies mid-blob
                    return response
                if stall is not None and sent >= stall[0]:
                    await asyncio.sleep(stall[1])
                    stall = None
                chunk = body[sent:sent + step]
                if drop is not None:
                    chunk = chunk[:max(1, drop - sent)]
                await response.write(chunk)
                sent += len(chunk)
                if f.throttle_bps:
                    await asyncio.sleep(len(chunk) / f.throttle_bps)
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    async def start_upload(self, request: web.Request) -> web.Response:
        upload = uuid.uuid4().hex
        self.uploads[upload] = bytearray()
        location = f"/v2/{request.match_info['ns']}/{request.match_info['model']}/blobs/uploads/{upload}?_state=x"
        return web.Response(status=202, headers={"Location": location, "Docker-Upload-UUID": upload})

    async def patch_upload(self, request: web.Request) -> web.Response:
        buf = self.uploads.get(request.match_info["upload"])
        if buf is None:
            return web.Response(status=404)
        content_range = request.headers.get("Content-Range", "")
        start = int(content_range.split("-")[0]) if content_range else len(buf)
        if start != len(buf):
            return web.Response(status=416)
        buf.extend(await request.read())
        return web.Response(status=202, headers={"Location": request.path_qs, "Range": f"0-{len(buf) - 1}"})

    async def finish_upload(self, request: web.Request) -> web.Response:
        buf = self.uploads.pop(request.match_info["upload"], None)
        digest = request.query.get("digest", "")
        if buf is None:
            return web.Response(status=404)
        buf.extend(await request.read())
        if "sha256:" + hashlib.sha256(buf).hexdigest() != digest:
            return web.json_response({"errors": [{"code": "DIGEST_INVALID", "message": "digest mismatch"}]},
                                     status=400)
        self.blobs[digest] = bytes(buf)
        return web.Response(status=201, headers={"Location": f"/v2/x/blobs/{digest}"})

    # --- ollama.com's account API ------------------------------------------------------------------

    def _account(self, request: web.Request) -> str | None:
        ts = request.query.get("ts", "0")
        if abs(time.time() - int(ts)) >= 300:
            return None
        return verify_signature(request.headers.get("Authorization"), f"{request.method},{request.path}?ts={ts}",
                                self.accounts)

    async def me(self, request: web.Request) -> web.Response:
        name = self._account(request)
        if name is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"id": "u1", "name": name, "email": f"{name}@example.com", "plan": "free"})

    async def delete_key(self, request: web.Request) -> web.Response:
        if self._account(request) is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        line = base64.urlsafe_b64decode(request.match_info["key"] + "=" * (-len(request.match_info["key"]) % 4))
        self.accounts.pop(line.decode().split(" ")[1], None)
        return web.Response(status=200)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """A cloud model's answer, for a signed request from a connected key only."""
        if self._account(request) is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        lines = [{"model": body["model"], "message": {"role": "assistant", "content": "Hello from the cloud."},
                  "done": False},
                 {"model": body["model"], "message": {"role": "assistant", "content": ""}, "done": True,
                  "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 5}]
        return web.Response(text="".join(json.dumps(line) + "\n" for line in lines),
                            content_type="application/x-ndjson")

    async def web_search(self, request: web.Request) -> web.Response:
        if self._account(request) is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        query = (await request.json()).get("query", "")
        return web.json_response({"results": [{"title": f"About {query}", "url": "https://example.com/1",
                                               "content": f"{query} explained."}]})

    async def show(self, request: web.Request) -> web.Response:
        if self._account(request) is None:
            return web.json_response({"error": "unauthorized"}, status=401)
        model = (await request.json()).get("model", "")
        if not model.startswith("gpt-oss"):
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        return web.json_response({"details": {"format": "", "family": "gptoss", "parameter_size": "116.8B"},
                                  "capabilities": ["completion", "tools", "thinking"], "model_info": {}})

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 30)
        repo = "/v2/{ns}/{model}"
        app.router.add_get("/token", self.token)
        app.router.add_post("/api/me", self.me)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/web_search", self.web_search)
        app.router.add_post("/api/show", self.show)
        app.router.add_delete("/api/user/keys/{key}", self.delete_key)
        app.router.add_get(repo + "/manifests/{tag}", self.get_manifest)
        app.router.add_put(repo + "/manifests/{tag}", self.put_manifest)
        app.router.add_head(repo + "/blobs/{digest}", self.head_blob)
        app.router.add_get(repo + "/blobs/{digest}", self.get_blob, allow_head=False)
        app.router.add_post(repo + "/blobs/uploads/", self.start_upload)
        app.router.add_patch(repo + "/blobs/uploads/{upload}", self.patch_upload)
        app.router.add_put(repo + "/blobs/uploads/{upload}", self.finish_upload)
        app.router.add_route("*", "/files/{name}", self.get_file)
        return app

    def _cdn_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cdn/{digest}", self.cdn_blob)
        return app

    # --- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> FakeRegistry:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the test registry did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        runners = []
        for make in (self._app, self._cdn_app):
            runner = web.AppRunner(make(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
        self.port = runners[0].addresses[0][1]
        self.cdn_port = runners[1].addresses[0][1]
        self._ready.set()
        await self._stop.wait()
        for runner in runners:
            await runner.cleanup()
