"""Images given by URL (OpenAI image_url, Anthropic url sources): fetched with a size limit and a
time limit, then handled like inline base64 images.

A request must not be able to make the server reach what its caller cannot (SSRF). So, unless the
operator allows it (Config.allow_private_image_urls, A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS=1):

- only public addresses are fetched: loopback, private, link-local (169.254.169.254, the cloud
  metadata service), shared, multicast, reserved and unspecified ones are refused, IPv6 forms that
  embed an IPv4 address included;
- the check is made on the addresses a host name resolves to, by the resolver that the connection
  itself uses, so a name that resolves differently a second time (DNS rebinding) cannot slip past;
- redirects are followed here, a few at most, and every hop is checked the same way.

Every failure is answered with one message: what went wrong (refused, unreachable, HTTP status,
too large, too slow) would let a caller map the network, so it goes to the server's log only.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from yarl import URL

from ..api import Message
from ..config import get_config
from ..engine.service import MAX_IMAGE_BYTES
from .errors import ApiError
from .state import service_of, state_of

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 15.0  # for the whole fetch of one image, redirects included
CONNECT_TIMEOUT_S = 5.0
MAX_REDIRECTS = 3
FETCH_FAILED = "failed to fetch image URL"
_REDIRECTS = (301, 302, 303, 307, 308)

# Networks that older Pythons count as global yet are no place to fetch images from: IETF protocol
# assignments (Oracle Cloud's metadata service is 192.0.0.192) and Azure's wire server.
_NOT_PUBLIC = (ipaddress.ip_network("192.0.0.0/24"), ipaddress.ip_network("168.63.129.16/32"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class _NotFetched(OSError):
    """A URL, address or answer the server does not take; an OSError so that aiohttp wraps it, when
    the resolver raises it, as it wraps any resolver failure."""


def is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


def address_is_public(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an IP address may be fetched from without the operator's leave."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not address_is_public(embedded):
            return False
    if (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified or not ip.is_global):
        return False
    return not any(ip in network for network in _NOT_PUBLIC)


class _PublicResolver(AbstractResolver):
    """Resolves host names as aiohttp's default resolver does and keeps only public addresses; the
    connection goes to one of those, so what was checked is what is reached."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        results = await self._inner.resolve(host, port, family)
        public = [r for r in results if address_is_public(r["host"])]
        if not public:
            raise _NotFetched(f"{host} resolves to no public address ({', '.join(r['host'] for r in results)})")
        return public

    async def close(self) -> None:
        await self._inner.close()


def _check_url(url: URL, allow_private: bool) -> None:
    """The checks made before connecting: scheme, and the address when the host is written as one
    (aiohttp connects to those without asking the resolver)."""
    if url.scheme not in ("http", "https"):
        raise _NotFetched(f"scheme {url.scheme!r}")
    host = url.raw_host
    if not host:
        raise _NotFetched("no host")
    if allow_private:
        return
    # aiohttp's own test for an address literal (helpers.is_ip_address): a colon, or digits and dots.
    if (":" in host or host.replace(".", "").isdigit()) and not address_is_public(host):
        raise _NotFetched(f"address {host}")


async def _fetch(url: str, allow_private: bool) -> bytes:
    resolver = None if allow_private else _PublicResolver()
    try:
        return await _fetch_with(url, allow_private, resolver)
    finally:
        if resolver is not None:
            await resolver.close()


async def _fetch_with(url: str, allow_private: bool, resolver: AbstractResolver | None) -> bytes:
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        current = URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            _check_url(current, allow_private)
            async with session.get(current, allow_redirects=False, headers={"Accept": "image/*"}) as response:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise _NotFetched(f"HTTP {response.status} without Location")
                    current = current.join(URL(location))
                    continue
                if response.status != 200:
                    raise _NotFetched(f"HTTP {response.status}")
                if (response.content_length or 0) > MAX_IMAGE_BYTES:
                    raise _NotFetched(f"Content-Length {response.content_length} over {MAX_IMAGE_BYTES}")
                data = bytearray()
                async for block in response.content.iter_chunked(1 << 16):
                    data += block
                    if len(data) > MAX_IMAGE_BYTES:
                        raise _NotFetched(f"more than {MAX_IMAGE_BYTES} bytes")
                return bytes(data)
        raise _NotFetched(f"more than {MAX_REDIRECTS} redirects")


async def fetch_image(url: str, *, allow_private: bool = False) -> str:
    """The image at ``url`` as base64; 400 with one message whatever went wrong."""
    try:
        data = await asyncio.wait_for(_fetch(url, allow_private), FETCH_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure reads the same to the caller
        log.warning("image URL %.300s not fetched: %s: %s", url, exc.__class__.__name__, exc)
        raise ApiError(400, FETCH_FAILED) from None
    return base64.b64encode(data).decode()


async def fetch_remote_images(messages: list[Message], *, allow_private: bool | None = None) -> None:
    """Replaces every image URL in the messages by the image itself. ``allow_private``: whether
    non-public addresses may be fetched; None reads the server's configuration."""
    if allow_private is None:
        allow_private = get_config().allow_private_image_urls
    for message in messages:
        if message.images and any(isinstance(i, str) and is_remote(i) for i in message.images):
            message.images = [await fetch_image(i, allow_private=allow_private)
                              if isinstance(i, str) and is_remote(i) else i for i in message.images]


async def fetch_images_for_model(request: Any, model: str, messages: list[Message]) -> None:
    """Fetches the messages' image URLs for a request to ``model``, once the model is known: a
    request for a model that does not exist is answered 404 without fetching anything."""
    if not any(isinstance(i, str) and is_remote(i) for m in messages for i in (m.images or ())):
        return
    state = state_of(request)
    service_of(request).resolve(model)  # ModelNotFound: 404
    await fetch_remote_images(messages, allow_private=state.config.allow_private_image_urls)
