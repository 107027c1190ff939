"""An embedded FHIR R4 server: a read-only seed layer shared by every server of a process, a
per-episode overlay of created resources and an ordered per-episode log of every write
attempt (url, raw body, status).

Agent code reaches it at ``http://localhost:8080/fhir/`` inside the sandbox (a unix socket on
the host, relayed by the sandbox; see ``docs/architecture.md``). Everything in a request is
hostile: the body size, the JSON depth, the number of query parameters, the number of
resources an episode may create and the number of write attempts logged are bounded.

Surface (what MedAgentBench uses, with HAPI's behaviour where the agent can observe it):
``GET metadata``; ``GET {Type}/{id}`` (404 with an OperationOutcome); ``GET {Type}?...`` with
a ``searchset`` Bundle (``total``, ``link`` self/next/previous, ``entry[].fullUrl/resource/
search.mode``), ``_count`` (default 20), ``_offset`` (stateless paging), ``_sort``;
unknown parameters or modifiers and malformed dates are 400; ``POST {Type}`` -> 201 with
``Location`` and a server-assigned id, the payload stored verbatim (plus ``id``/``meta``),
validated leniently with ``fhir.resources`` (R4B) when it is installed: problems are
warnings in the log, never rejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from medagentgym.tasks.contract import HttpRequest, HttpResponse, HttpService

BASE_URL = "http://localhost:8080/fhir/"
PREFIX = "/fhir"
FHIR_JSON = "application/fhir+json;charset=utf-8"
TYPES = ("Patient", "Observation", "MedicationRequest", "ServiceRequest", "Condition",
         "Procedure")

MAX_BODY = 64 * 1024
MAX_DEPTH = 32
MAX_PARAMS = 64
MAX_CREATED = 64  # resources one episode may create
MAX_LOGGED = 256  # write attempts one episode logs (later ones are counted, not kept)
MAX_COUNT = 10_000
DEFAULT_COUNT = 20


# --------------------------------------------------------------------------- responses


FhirResponse = HttpResponse  # headers (Location, ETag) are HttpResponse's own


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> FhirResponse:
    return FhirResponse(status, json.dumps(obj, separators=(",", ":")).encode(), FHIR_JSON,
                        headers or {})


def outcome(status: int, text: str, code: str = "processing",
            severity: str = "error") -> FhirResponse:
    return _json(status, {"resourceType": "OperationOutcome",
                          "issue": [{"severity": severity, "code": code,
                                     "diagnostics": text[:500]}]})


class BadRequest(Exception):
    """A 400 with an OperationOutcome (HAPI's answer to an invalid search)."""


# --------------------------------------------------------------------------- values


def fold(text: str) -> str:
    """HAPI's normalisation for string search: accents removed, case folded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_DATE_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?")


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The instant range [lo, hi) a FHIR date/dateTime/instant covers (its precision); None
    when it is not one. A time without a zone is read as UTC."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hh, mm, ss, frac, tz = m.groups()
    try:
        tzinfo = UTC
        if tz and tz != "Z":
            sign = 1 if tz[0] == "+" else -1
            tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
        if month is None:
            lo = datetime(int(year), 1, 1, tzinfo=UTC)
            return lo, datetime(int(year) + 1, 1, 1, tzinfo=UTC)
        if day is None:
            lo = datetime(int(year), int(month), 1, tzinfo=UTC)
            nxt = (datetime(int(year) + 1, 1, 1, tzinfo=UTC) if int(month) == 12
                   else datetime(int(year), int(month) + 1, 1, tzinfo=UTC))
            return lo, nxt
        if hh is None:
            lo = datetime(int(year), int(month), int(day), tzinfo=UTC)
            return lo, lo + timedelta(days=1)
        lo = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0),
                      int(float(frac) * 1_000_000) if frac else 0, tzinfo=tzinfo)
        step = timedelta(minutes=1) if ss is None else (
            timedelta(microseconds=1) if frac else timedelta(seconds=1))
        return lo.astimezone(UTC), (lo + step).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_instant(text: Any) -> datetime | None:
    """A dateTime with at least minutes as an aware UTC datetime (``Z`` or an offset)."""
    if not isinstance(text, str):
        return None
    r = date_range(text)
    if r is None or not re.search(r"T\d{2}:\d{2}", text):
        return None
    return r[0]


def reference_id(ref: Any, rtype: str = "Patient") -> str | None:
    """``Patient/X``, ``X`` or ``http://.../fhir/Patient/X`` -> ``X``."""
    if not isinstance(ref, str):
        return None
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        path = urlsplit(ref).path.rstrip("/")
        parts = path.split("/")
        if len(parts) >= 2 and parts[-2] == rtype:
            return parts[-1] or None
        return None
    if "/" in ref:
        t, _, i = ref.partition("/")
        return i if t == rtype and i and "/" not in i else None
    return ref or None


def _get(obj: Any, path: str) -> list[Any]:
    """Values at a dotted path, flattening lists."""
    cur = [obj]
    for part in path.split("."):
        nxt: list[Any] = []
        for c in cur:
            if isinstance(c, dict) and part in c:
                v = c[part]
                nxt.extend(v if isinstance(v, list) else [v])
        cur = nxt
    return cur


def _codings(obj: Any, path: str) -> list[tuple[str | None, str | None]]:
    out = []
    for cc in _get(obj, path):
        if isinstance(cc, dict):
            for c in cc.get("coding") or []:
                if isinstance(c, dict):
                    out.append((c.get("system"), c.get("code")))
    return out


# --------------------------------------------------------------------------- search params

# kind, paths
_P = dict[str, tuple[str, tuple[str, ...]]]
_COMMON: _P = {"_id": ("id", ("id",))}
_SUBJECT: _P = {"patient": ("reference", ("subject.reference",)),
                "subject": ("reference", ("subject.reference",))}
SEARCH_PARAMS: dict[str, _P] = {
    "Patient": {
        **_COMMON,
        "identifier": ("token_identifier", ("identifier",)),
        "name": ("string", ("name.family", "name.given", "name.prefix", "name.suffix",
                            "name.text")),
        "family": ("string", ("name.family",)),
        "given": ("string", ("name.given",)),
        "birthdate": ("date", ("birthDate",)),
        "gender": ("token_code", ("gender",)),
        "address": ("string", ("address.line", "address.city", "address.state",
                               "address.postalCode", "address.country", "address.text")),
        "address-city": ("string", ("address.city",)),
        "address-state": ("string", ("address.state",)),
        "address-postalcode": ("string", ("address.postalCode",)),
        "telecom": ("token_value", ("telecom",)),
        "phone": ("token_value", ("telecom",)),
    },
    "Observation": {
        **_COMMON, **_SUBJECT,
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "date": ("date", ("effectiveDateTime", "effectiveInstant", "effectivePeriod.start")),
        "status": ("token_code", ("status",)),
    },
    "MedicationRequest": {
        **_COMMON, **_SUBJECT,
        "code": ("token", ("medicationCodeableConcept",)),
        "category": ("token", ("category",)),
        "status": ("token_code", ("status",)),
        "intent": ("token_code", ("intent",)),
        "authoredon": ("date", ("authoredOn",)),
        "date": ("date", ("dosageInstruction.timing.event",
                          "dosageInstruction.timing.repeat.boundsPeriod.start")),
    },
    "ServiceRequest": {
        **_COMMON, **_SUBJECT,
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "status": ("token_code", ("status",)),
        "intent": ("token_code", ("intent",)),
        "priority": ("token_code", ("priority",)),
        "authored": ("date", ("authoredOn",)),
        "occurrence": ("date", ("occurrenceDateTime", "occurrencePeriod.start")),
    },
    "Condition": {
        **_COMMON, **_SUBJECT,
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "clinical-status": ("token", ("clinicalStatus",)),
        "onset-date": ("date", ("onsetDateTime",)),
        "recorded-date": ("date", ("recordedDate",)),
    },
    "Procedure": {
        **_COMMON, **_SUBJECT,
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "status": ("token_code", ("status",)),
        "date": ("date", ("performedDateTime", "performedPeriod.start")),
    },
}
#: result parameters every search accepts (``_format``/``_pretty`` are ignored: JSON only)
CONTROL = {"_count", "_sort", "_offset", "_format", "_pretty", "_summary", "_total"}
_MODIFIERS = {"string": {"exact", "contains"}, "token": {"text"}}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")


def _date_match(prefix: str, p: tuple[datetime, datetime], r: tuple[datetime, datetime]) -> bool:
    plo, phi = p
    rlo, rhi = r
    if prefix == "eq":
        return rlo >= plo and rhi <= phi
    if prefix == "ne":
        return not (rlo >= plo and rhi <= phi)
    if prefix == "gt":
        return rhi > phi
    if prefix == "lt":
        return rlo < plo
    if prefix == "ge":
        return rhi > plo
    if prefix == "le":
        return rlo < phi
    if prefix == "sa":
        return rlo >= phi
    return rhi <= plo  # eb


def _compile(rtype: str, name: str, modifier: str | None, value: str) -> Callable[[dict], bool]:
    """A predicate for one ``name[:modifier]=value`` (values comma-separated: OR)."""
    params = SEARCH_PARAMS[rtype]
    if name not in params:
        raise BadRequest(f"Unknown search parameter \"{name}\" for resource type \"{rtype}\". "
                         f"Valid search parameters for this search are: "
                         f"[{', '.join(sorted(params))}]")
    kind, paths = params[name]
    base_kind = "token" if kind.startswith("token") else kind
    if modifier is not None and modifier not in _MODIFIERS.get(base_kind, set()):
        raise BadRequest(f"Invalid modifier \":{modifier}\" for parameter \"{name}\"")
    alternatives = [v for v in value.split(",")] if value else [""]
    if any(v == "" for v in alternatives):
        raise BadRequest(f"Parameter \"{name}\" has an empty value")
    tests: list[Callable[[dict], bool]] = []
    for alt in alternatives:
        tests.append(_one(kind, name, paths, modifier, alt))
    return lambda res: any(t(res) for t in tests)


def _one(kind: str, name: str, paths: tuple[str, ...], modifier: str | None,
         value: str) -> Callable[[dict], bool]:
    if kind == "id":
        return lambda res: res.get("id") == value
    if kind == "reference":
        want = reference_id(value, "Patient") if "/" in value else value
        if want is None:
            raise BadRequest(f"Invalid reference \"{value}\" for parameter \"{name}\"")
        return lambda res: any(reference_id(v) == want for v in _get(res, paths[0]))
    if kind == "string":
        needle = fold(value)

        def string_match(res: dict) -> bool:
            for p in paths:
                for v in _get(res, p):
                    if not isinstance(v, str):
                        continue
                    if modifier == "exact":
                        if v == value:
                            return True
                    elif modifier == "contains":
                        if needle in fold(v):
                            return True
                    elif fold(v).startswith(needle):
                        return True
            return False

        return string_match
    if kind == "date":
        m = re.fullmatch(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?(.*)", value)
        assert m is not None
        prefix, text = m.group(1) or "eq", m.group(2).replace(" ", "+")
        if prefix == "ap":
            prefix = "eq"
        prange = date_range(text)
        if prange is None:
            raise BadRequest(f"Invalid date/time format: \"{value}\"")

        def date_match(res: dict) -> bool:
            for p in paths:
                for v in _get(res, p):
                    r = date_range(v) if isinstance(v, str) else None
                    if r is not None and _date_match(prefix, prange, r):
                        return True
            return False

        return date_match
    if kind == "token_code":
        return lambda res: any(v == value for p in paths for v in _get(res, p))
    if kind in ("token_identifier", "token_value"):
        system, bar, code = value.rpartition("|") if "|" in value else (None, "", value)

        def ident_match(res: dict) -> bool:
            for ident in _get(res, paths[0]):
                if not isinstance(ident, dict):
                    continue
                if ident.get("value") != code:
                    continue
                if bar and system and ident.get("system") != system:
                    continue
                return True
            return False

        return ident_match
    # token over CodeableConcepts
    if modifier == "text":
        needle = fold(value)
        return lambda res: any(
            isinstance(cc, dict) and (
                fold(str(cc.get("text", ""))).startswith(needle)
                or any(isinstance(c, dict) and fold(str(c.get("display", ""))).startswith(needle)
                       for c in cc.get("coding") or []))
            for p in paths for cc in _get(res, p))
    if "|" in value:
        system, _, code = value.partition("|")
    else:
        system, code = None, value

    def token_match(res: dict) -> bool:
        for p in paths:
            for sys_, c in _codings(res, p):
                if code and c != code:
                    continue
                if system is not None and (sys_ or "") != system:
                    continue
                return True
        return False

    return token_match


def _sort_key(rtype: str, key: str) -> Callable[[dict], Any]:
    if key == "_id":
        return lambda r: str(r.get("id", ""))
    if key == "_lastUpdated":
        return lambda r: str((r.get("meta") or {}).get("lastUpdated", ""))
    params = SEARCH_PARAMS[rtype]
    if key not in params or params[key][0] not in ("date", "string", "token_code"):
        raise BadRequest(f"Unknown _sort parameter value \"{key}\" for resource type "
                         f"\"{rtype}\"")
    kind, paths = params[key]

    def value(r: dict) -> Any:
        for p in paths:
            for v in _get(r, p):
                if kind == "date":
                    rng = date_range(v) if isinstance(v, str) else None
                    if rng is not None:
                        return rng[0].timestamp()
                elif isinstance(v, str):
                    return fold(v)
        return None

    return value


# --------------------------------------------------------------------------- seed, episodes


class Seed:
    """Read-only resources by type and id, indexed by patient (shared by every server)."""

    def __init__(self, resources: Iterable[dict]) -> None:
        self.by_type: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
        self.by_patient: dict[tuple[str, str], list[dict]] = {}
        for res in resources:
            rtype = res["resourceType"]
            self.by_type.setdefault(rtype, {})[res["id"]] = res
            for ref in _get(res, "subject.reference"):
                pid = reference_id(ref)
                if pid:
                    self.by_patient.setdefault((rtype, pid), []).append(res)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_type.values())


@dataclass
class WriteRecord:
    """One write attempt of an episode, in order."""

    method: str
    url: str  # the request target as sent (path and query)
    body: bytes  # the raw body (bounded by the server's body limit)
    status: int
    resource_type: str | None = None
    id: str | None = None  # the server-assigned id of an accepted create
    payload: Any = None  # the JSON the agent sent (when it parsed)
    warnings: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


def _depth_ok(body: bytes, limit: int) -> bool:
    """Whether JSON text nests at most ``limit`` deep (linear scan, strings skipped)."""
    depth = 0
    in_str = esc = False
    for b in body:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif b in (0x5D, 0x7D):
            depth -= 1
    return True


@functools.lru_cache(maxsize=1)
def _validator() -> Callable[[str], Any] | None:
    try:
        from fhir.resources.R4B import get_fhir_model_class
    except Exception:  # not installed: no validation, no warnings
        return None
    return get_fhir_model_class


def validate(payload: dict) -> list[str]:
    """Lenient R4B validation: the problems as warnings (never a rejection)."""
    get_model = _validator()
    if get_model is None:
        return []
    try:
        model = get_model(str(payload.get("resourceType")))
        model.model_validate(payload)
    except Exception as exc:  # pydantic's ValidationError, or an unknown type
        errors = getattr(exc, "errors", None)
        if callable(errors):
            with contextlib.suppress(Exception):
                return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"[:200]
                        for e in errors()[:10]]
        return [f"{type(exc).__name__}: {exc}"[:200]]
    return []


# --------------------------------------------------------------------------- the server


class FhirServer(HttpService):
    """The FHIR R4 service of one environment (one episode at a time)."""

    port = 8080
    max_body = MAX_BODY

    def __init__(self, seed: Seed, *, now: datetime | None = None,
                 base_url: str = BASE_URL) -> None:
        super().__init__()
        self.seed = seed
        self.now = now
        #: the base in ``fullUrl``, paging links and ``Location`` (what agent code uses)
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.created: dict[str, dict[str, dict]] = {t: {} for t in TYPES}
        self.writes: list[WriteRecord] = []
        self.writes_dropped = 0
        self.requests = 0
        self._next_id = 1000

    # -- episodes -------------------------------------------------------------------------
    async def reset(self) -> None:
        self.created = {t: {} for t in TYPES}
        self.writes = []
        self.writes_dropped = 0
        self.requests = 0
        self._next_id = 1000

    def accepted_writes(self) -> list[WriteRecord]:
        return [w for w in self.writes if w.accepted]

    # -- HTTP -----------------------------------------------------------------------------
    async def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests += 1
        target = request.path
        if target.startswith(("http://", "https://")):  # absolute-form request target
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        path, _, query = target.partition("?")
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            return outcome(404, f"Unknown path {path[:100]!r}: the FHIR base is "
                           f"{self.base_url}", "not-found")
        segments = [s for s in path[len(PREFIX):].split("/") if s]
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            return self._write(request, target, segments)
        if request.method not in ("GET", "HEAD"):
            return outcome(405, f"Method {request.method[:20]} is not supported")
        try:
            if not segments:
                return outcome(400, "This is the base URL of a FHIR server. Unable to handle "
                               "this request, as it does not contain a resource type or "
                               "operation name.")
            if segments == ["metadata"]:
                cap = capability_statement()
                if self.base_url != BASE_URL:
                    cap = {**cap, "implementation": {**cap["implementation"],
                                                     "url": self.base_url}}
                return _json(200, cap)
            rtype = segments[0]
            if rtype not in TYPES:
                return outcome(404, f"Unknown resource type '{rtype[:60]}' - Server knows "
                               f"how to handle: [{', '.join(TYPES)}]", "not-supported")
            if len(segments) == 1:
                return _json(200, self.search(rtype, query, target))
            if len(segments) == 2:
                res = self.read(rtype, segments[1])
                if res is None:
                    return outcome(404, f"Resource {rtype}/{segments[1][:60]} is not known",
                                   "not-found")
                return _json(200, res)
            return outcome(400, "Unsupported operation")
        except BadRequest as exc:
            return outcome(400, str(exc))

    # -- reads ----------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> dict | None:
        return self.created.get(rtype, {}).get(rid) or self.seed.by_type.get(rtype, {}).get(rid)

    def _candidates(self, rtype: str, patient: str | None) -> list[dict]:
        if patient is not None and rtype != "Patient":
            seed = self.seed.by_patient.get((rtype, patient), [])
        else:
            seed = list(self.seed.by_type.get(rtype, {}).values())
        return [*seed, *self.created.get(rtype, {}).values()]

    def search(self, rtype: str, query: str, target: str) -> dict:
        pairs = parse_qsl(query, keep_blank_values=True)
        if len(pairs) > MAX_PARAMS:
            raise BadRequest(f"Too many search parameters (at most {MAX_PARAMS})")
        tests: list[Callable[[dict], bool]] = []
        count, offset, sort, summary = DEFAULT_COUNT, 0, None, None
        patient: str | None = None
        for raw_name, value in pairs:
            name, _, modifier = raw_name.partition(":")
            if name in CONTROL:
                if name == "_count":
                    count = _int_param(name, value, 0, None)
                    count = min(count, MAX_COUNT)
                elif name == "_offset":
                    offset = _int_param(name, value, 0, 10**9)
                elif name == "_sort":
                    sort = value
                elif name == "_summary":
                    if value not in ("count", "true", "false", "data", "text"):
                        raise BadRequest(f"Invalid _summary value \"{value[:40]}\"")
                    summary = value
                continue
            tests.append(_compile(rtype, name, modifier or None, value))
            if name in ("patient", "subject") and modifier == "" and "," not in value:
                patient = reference_id(value) if "/" in value else value
        matches = [r for r in self._candidates(rtype, patient) if all(t(r) for t in tests)]
        if sort:
            for key in reversed([k for k in sort.split(",") if k]):
                desc = key.startswith("-")
                keyfn = _sort_key(rtype, key.lstrip("-"))
                present = [r for r in matches if keyfn(r) is not None]
                missing = [r for r in matches if keyfn(r) is None]
                present.sort(key=keyfn, reverse=desc)
                matches = present + missing
        total = len(matches)
        bundle: dict[str, Any] = {
            "resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": _stamp(self.now)}, "type": "searchset", "total": total,
        }
        params = [(k, v) for k, v in pairs if k != "_offset"]
        base = self.base_url
        links = [{"relation": "self", "url": base + rtype + (f"?{query}" if query else "")}]
        if summary != "count" and count > 0:
            if offset + count < total:
                links.append({"relation": "next", "url": _page_url(base, rtype, params,
                                                                   offset + count)})
            if offset > 0:
                links.append({"relation": "previous",
                              "url": _page_url(base, rtype, params, max(0, offset - count))})
        bundle["link"] = links
        if summary != "count" and count > 0:
            page = matches[offset:offset + count]
            if page:
                bundle["entry"] = [{"fullUrl": f"{base}{rtype}/{r['id']}", "resource": r,
                                    "search": {"mode": "match"}} for r in page]
        return bundle

    # -- writes ---------------------------------------------------------------------------
    def _new_id(self) -> str:
        """A server-assigned id for a created resource."""
        self._next_id += 1
        return str(self._next_id)

    def _log(self, record: WriteRecord) -> None:
        if len(self.writes) < MAX_LOGGED:
            self.writes.append(record)
        else:
            self.writes_dropped += 1

    def _write(self, request: HttpRequest, target: str, segments: list[str]) -> FhirResponse:
        record = WriteRecord(request.method, target[:2000], request.body[:MAX_BODY], 0)
        response = self._create(request, segments, record)
        record.status = response.status
        self._log(record)
        return response

    def _create(self, request: HttpRequest, segments: list[str],
                record: WriteRecord) -> FhirResponse:
        if request.method != "POST":
            return outcome(405, f"{request.method} is not allowed on this server: create "
                           "resources with POST [base]/[type]")
        if len(segments) != 1 or segments[0] not in TYPES:
            return outcome(400 if len(segments) != 1 else 404,
                           "POST to [base]/[type] with a resource of that type, one of: "
                           + ", ".join(TYPES))
        rtype = segments[0]
        record.resource_type = rtype
        if not _depth_ok(request.body, MAX_DEPTH):
            return outcome(400, f"JSON nested deeper than {MAX_DEPTH} levels")
        try:
            payload = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return outcome(400, "Failed to parse request body as JSON resource")
        record.payload = payload
        if not isinstance(payload, dict):
            return outcome(400, "The body must be a JSON object (a FHIR resource)")
        if payload.get("resourceType") != rtype:
            return outcome(400, f"Incorrect resource type: expected \"{rtype}\" in "
                           "\"resourceType\"")
        if sum(len(v) for v in self.created.values()) >= MAX_CREATED:
            return outcome(400, f"An episode may create at most {MAX_CREATED} resources",
                           "too-costly")
        record.warnings = validate(payload)
        rid = self._new_id()
        stored = dict(payload)
        stored["id"] = rid
        stored["meta"] = {"versionId": "1", "lastUpdated": _stamp(self.now)}
        self.created[rtype][rid] = stored
        record.id = rid
        location = f"{self.base_url}{rtype}/{rid}/_history/1"
        body = dict(stored)
        return _json(201, body, {"Location": location, "ETag": 'W/"1"'})


def _stamp(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).isoformat(timespec="milliseconds")


def _int_param(name: str, value: str, lo: int, hi: int | None) -> int:
    if not re.fullmatch(r"\d{1,10}", value or ""):
        raise BadRequest(f"Invalid {name} value \"{value[:40]}\": a whole number is required")
    n = int(value)
    if n < lo or (hi is not None and n > hi):
        raise BadRequest(f"Invalid {name} value {n}")
    return n


def _page_url(base: str, rtype: str, params: list[tuple[str, str]], offset: int) -> str:
    return base + rtype + "?" + urlencode([*params, ("_offset", str(offset))],
                                              quote_via=quote, safe="|:,")


@functools.lru_cache(maxsize=1)
def capability_statement() -> dict:
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": "2023-11-13",
        "publisher": "MedAgentGym", "kind": "instance", "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "software": {"name": "medagentgym embedded FHIR server", "version": "1"},
        "implementation": {"description": "MedAgentGym FHIR R4", "url": BASE_URL},
        "rest": [{
            "mode": "server",
            "resource": [{
                "type": t,
                "interaction": [{"code": "read"}, {"code": "search-type"},
                                {"code": "create"}],
                "searchParam": [{"name": n, "type": k.split("_")[0] if k != "id" else "token"}
                                for n, (k, _) in SEARCH_PARAMS[t].items()],
            } for t in TYPES],
        }],
    }


def timed_reset(server: FhirServer) -> float:
    """Seconds a reset takes (for benchmarks)."""
    t0 = time.perf_counter()
    asyncio.run(server.reset())
    return time.perf_counter() - t0
