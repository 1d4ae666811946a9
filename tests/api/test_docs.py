"""/docs and /redoc render from local assets only: no CDN, every asset served."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import httpx
import pytest

ASSET = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


def referenced_urls(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_need_no_internet(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = referenced_urls(response.text)
    assert any(u.endswith(".js") for u in urls), urls
    assert "/openapi.json" in urls
    for url in urls:
        parsed = urlparse(url)
        assert not parsed.scheme and not parsed.netloc, f"{page} references {url}"
        asset = await client.get(url)
        assert asset.status_code == 200, url
    assert not re.search(r"https?://(?!testserver)", response.text.split("<script>")[0])
    assert "cdn" not in response.text.lower()
