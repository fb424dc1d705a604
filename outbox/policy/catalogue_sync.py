"""`outbox templates sync`: every template of the WABA, read from the Graph API
(`{WABA_ID}/message_templates`), page after page; kept apart from the catalogue so that enqueue's
imports stay free of aiohttp."""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from outbox.errors import ConfigurationError
from outbox.policy.catalogue import CatalogueEntry, entry_from_graph
from outbox.settings import Settings
from outbox.whatsapp import error_from_response

WABA_ID_VARIABLE = "META_WABA_ID"
PAGE_SIZE = 100
TIMEOUT = 30.0
FIELDS = "name,language,category,status,quality_score,components"


def waba_id(environ: Mapping[str, str]) -> str:
    value = (environ.get(WABA_ID_VARIABLE) or "").strip()
    if not value.isdigit():
        raise ConfigurationError(
            f"{WABA_ID_VARIABLE}: needed by `outbox templates sync`, the WhatsApp Business "
            "Account id (digits; WhatsApp Manager > Account tools)"
        )
    return value


async def fetch_catalogue(
    settings: Settings, waba: str, http: aiohttp.ClientSession
) -> list[CatalogueEntry]:
    """Every template of the WABA, following `paging.next` to the last page."""
    if not settings.access_token:
        raise ConfigurationError("META_ACCESS_TOKEN: needed by `outbox templates sync`")
    url: str | None = (
        f"{settings.graph_api_url}/{settings.graph_api_version}/{waba}/message_templates"
    )
    params: dict[str, str] | None = {"fields": FIELDS, "limit": str(PAGE_SIZE)}
    headers = {"Authorization": f"Bearer {settings.access_token}"}
    entries: list[CatalogueEntry] = []
    while url is not None:
        async with http.get(
            url, params=params, headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
        ) as response:
            text = await response.text(errors="replace")
            if response.status != 200:
                error = error_from_response(response.status, text, None)
                raise ConfigurationError(
                    f"the Graph API refused the templates of WABA {waba} ({WABA_ID_VARIABLE}): "
                    f"{error}"
                )
        try:
            page = json.loads(text)
        except ValueError:
            raise ConfigurationError(
                "the Graph API answered 200 without JSON: check META_GRAPH_API_URL"
            ) from None
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise ConfigurationError(
                "the Graph API answered 200 without a template list: check META_GRAPH_API_URL"
            )
        entries += [e for e in map(entry_from_graph, data) if isinstance(e, CatalogueEntry)]
        paging = page.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        url = following if isinstance(following, str) and following else None
        params = None  # the next link carries them
    return entries
