"""Images given by URL (OpenAI image_url, Anthropic url sources): fetched with a size limit and a
timeout, then handled like inline base64 images."""

from __future__ import annotations

import asyncio
import base64

import aiohttp

from ..engine.service import MAX_IMAGE_BYTES
from .errors import ApiError

FETCH_TIMEOUT_S = 15.0


def is_remote(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


async def fetch_image(url: str) -> str:
    """The image at ``url`` as base64; 400 when it cannot be had or is too large."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url) as response:
                if response.status != 200:
                    raise ApiError(400, f"failed to fetch image {url}: HTTP {response.status}")
                if (response.content_length or 0) > MAX_IMAGE_BYTES:
                    raise ApiError(400, f"image {url} is larger than {MAX_IMAGE_BYTES >> 20} MiB")
                data = bytearray()
                async for block in response.content.iter_chunked(1 << 16):
                    data += block
                    if len(data) > MAX_IMAGE_BYTES:
                        raise ApiError(400, f"image {url} is larger than {MAX_IMAGE_BYTES >> 20} MiB")
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise ApiError(400, f"failed to fetch image {url}: {exc.__class__.__name__}") from None
    return base64.b64encode(bytes(data)).decode()


async def fetch_remote_images(messages: list[dict]) -> None:
    """Replaces every image URL in the messages by the image itself."""
    for message in messages:
        images = message.get("images")
        if images and any(isinstance(i, str) and is_remote(i) for i in images):
            message["images"] = [await fetch_image(i) if isinstance(i, str) and is_remote(i) else i for i in images]
