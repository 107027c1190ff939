"""MedAgentBench against a FHIR server the user runs (the benchmark's HAPI image, say):
``MEDAGENTBENCH_FHIR_URL`` or the family option ``fhir_url``.

Agent code still talks to ``http://localhost:8080/fhir/`` (the episode's service). Reads and
searches are forwarded to the user's server and its URLs in the answer (``fullUrl``, paging
links, whatever base the server reports about itself) are rewritten to the local base, so
that following a ``next`` link comes back through here. Writes never reach the user's server:
they go to the episode's overlay and write log exactly as on the embedded server, the overlay
answers reads of the resources the episode created and joins the first page of a search, and
the same graders read the log.

Only the user's server is reachable this way: the path is a FHIR path (resource type, id,
``metadata``, ``_history``), the method GET/HEAD, the answer size bounded.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from medagentgym.tasks.contract import HttpRequest, HttpResponse
from medagentgym.tasks.fhir.server import (
    BASE_URL,
    FHIR_JSON,
    PREFIX,
    TYPES,
    BadRequest,
    FhirServer,
    Seed,
    outcome,
)

LOCAL_BASE = BASE_URL.rstrip("/")
MAX_UPSTREAM_BYTES = 32 * 1024 * 1024
UPSTREAM_TIMEOUT = 60.0
_SEGMENT = re.compile(r"[A-Za-z0-9\-._$]{1,128}")
_PAGING = ("_getpages", "_getpagesoffset", "_offset", "_page_token")


def check_upstream(url: str) -> str:
    """The user's base URL, normalised (no trailing slash); ValueError with the fix."""
    if not isinstance(url, str) or len(url) > 2000:
        raise ValueError("the FHIR URL must be text, e.g. http://localhost:8080/fhir/")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:200]!r} (e.g. http://localhost:8080/fhir/)")
    if parts.query or parts.fragment:
        raise ValueError(f"the FHIR base URL takes no query or fragment: {url[:200]!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class ProxyFhirServer(FhirServer):
    """The episode's FHIR service over a user's server: GETs forwarded, writes kept here."""

    def __init__(self, upstream: str, *, now: datetime | None = None,
                 client: Any = None) -> None:
        super().__init__(Seed([]), now=now)
        self.upstream = check_upstream(upstream)
        self.forwarded = 0
        self._bases = {self.upstream}
        self._client = client

    def _new_id(self) -> str:
        # ids the user's server would not assign (HAPI's are numeric)
        self._next_id += 1
        return f"mag-{self._next_id}"

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await super().stop()

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return await super().handle(request)
        self.requests += 1
        target = request.path
        if target.startswith(("http://", "https://")):
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        path, _, query = target.partition("?")
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            return outcome(404, f"Unknown path {path[:100]!r}: the FHIR base is {BASE_URL}",
                           "not-found")
        segments = [s for s in path[len(PREFIX):].split("/") if s]
        if any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
            return outcome(400, "Invalid FHIR path")
        if len(segments) == 2 and segments[0] in TYPES:
            local = self.created.get(segments[0], {}).get(segments[1])
            if local is not None:
                return HttpResponse(200, json.dumps(local).encode(), FHIR_JSON)
        url = self.upstream + "".join("/" + s for s in segments) + (f"?{query}" if query else "")
        response = await self._forward(url, request.method)
        if (response.status == 200 and len(segments) == 1 and segments[0] in TYPES
                and not any(p in query for p in _PAGING)):
            response = self._join_overlay(response, segments[0], query, target)
        return response

    async def _forward(self, url: str, method: str) -> HttpResponse:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=UPSTREAM_TIMEOUT, follow_redirects=False)
        self.forwarded += 1
        try:
            async with self._client.stream(method, url, headers={
                    "Accept": "application/fhir+json, application/json"}) as r:
                chunks, size = [], 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_UPSTREAM_BYTES:
                        return outcome(502, "the FHIR server's answer is too large "
                                       f"(over {MAX_UPSTREAM_BYTES // 2**20} MiB)")
                    chunks.append(chunk)
                body = b"".join(chunks)
                status, ctype = r.status_code, r.headers.get("content-type", FHIR_JSON)
        except httpx.HTTPError as exc:
            return outcome(502, f"the FHIR server at {self.upstream} did not answer "
                           f"({type(exc).__name__})")
        return HttpResponse(status, self._rebase_body(body), ctype)

    # -- rewriting the user's base to the local one ----------------------------------------
    def _rebase(self, url: str) -> str:
        for base in sorted(self._bases, key=len, reverse=True):
            if url == base or url.startswith((base + "/", base + "?")):
                return LOCAL_BASE + url[len(base):]
        return url

    def _learn(self, obj: dict) -> None:
        """The base the server reports about itself (HAPI's configured address may differ
        from the URL it was reached at), from a Bundle's self link or a
        CapabilityStatement."""
        urls = [lk.get("url") for lk in obj.get("link") or []
                if isinstance(lk, dict) and lk.get("relation") == "self"]
        impl = obj.get("implementation")
        if isinstance(impl, dict):
            urls.append(impl.get("url"))
        for u in urls:
            if not isinstance(u, str) or not u.startswith(("http://", "https://")):
                continue
            parts = urlsplit(u)
            path = parts.path.rstrip("/")
            for t in (*TYPES, "metadata"):
                if path.endswith("/" + t):
                    path = path[: -len(t) - 1]
                    break
            if path:
                self._bases.add(f"{parts.scheme}://{parts.netloc}{path}")

    def _rebase_body(self, body: bytes) -> bytes:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return body
        if not isinstance(obj, dict):
            return body
        self._learn(obj)
        for lk in obj.get("link") or []:
            if isinstance(lk, dict) and isinstance(lk.get("url"), str):
                lk["url"] = self._rebase(lk["url"])
        for e in obj.get("entry") or []:
            if isinstance(e, dict) and isinstance(e.get("fullUrl"), str):
                e["fullUrl"] = self._rebase(e["fullUrl"])
        impl = obj.get("implementation")
        if isinstance(impl, dict) and isinstance(impl.get("url"), str):
            impl["url"] = self._rebase(impl["url"])
        return json.dumps(obj, separators=(",", ":")).encode()

    def _join_overlay(self, response: HttpResponse, rtype: str, query: str,
                      target: str) -> HttpResponse:
        """The episode's own matching resources added to the first page of a search."""
        if not any(self.created.get(rtype, {}).values()):
            return response
        try:
            local = self.search(rtype, query, target)
            bundle = json.loads(response.body)
        except (BadRequest, ValueError, RecursionError):
            return response
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return response
        extra = local.get("entry") or []
        if not extra:
            return response
        if isinstance(bundle.get("total"), int):
            bundle["total"] += local.get("total", len(extra))
        bundle["entry"] = [*(bundle.get("entry") or []), *extra]
        return HttpResponse(200, json.dumps(bundle, separators=(",", ":")).encode(), FHIR_JSON)
