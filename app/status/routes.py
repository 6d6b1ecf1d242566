"""The status page's routes (DESIGN §4, §13): the page, its snapshot as JSON and as events,
the static files, and the admin session with its key management.

Access: in open mode (no client keys) the page is as open as the API (the browser guard
already refused foreign hosts and cross-site requests). Once keys exist, only an admin
session (`/status/login` with PROXY_ADMIN_KEY) or the admin key as a bearer token opens the
data; a client key never does. Key management always needs the session and its CSRF token.
"""

from __future__ import annotations

import hmac
import logging
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from app.api.admin import KeyCreate
from app.api.render import error_response
from app.deps import Services, is_admin, services_of
from app.errors import Forbidden, InvalidKey, ProxyError
from app.status import page
from app.status.events import snapshots
from app.status.sessions import COOKIE, SESSION_SECONDS, LoginLimiter, Session, SessionStore

log = logging.getLogger(__name__)
router = APIRouter(tags=["status"])

# Same-origin only, no inline script or style, never framed (the page has buttons).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# The page's forms are a few short fields.
MAX_FORM_BYTES = 16 * 1024
_STATIC = {
    name: (files("app.status").joinpath("static", name).read_bytes(), kind)
    for name, kind in (
        ("status.js", "text/javascript; charset=utf-8"),
        ("status.css", "text/css; charset=utf-8"),
    )
}


class StatusAccess:
    """The page's sessions and its login limiter, one per app."""

    def __init__(self, sessions: SessionStore, logins: LoginLimiter) -> None:
        self.sessions = sessions
        self.logins = logins


def _access(request: Request) -> StatusAccess:
    access: StatusAccess = request.app.state.status_access
    return access


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _html(text: str, status: int = 200) -> Response:
    return _secure(HTMLResponse(text, status))


async def _session(request: Request, services: Services) -> Session | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    return await _access(request).sessions.get(session_id, services.clock())


async def _may_read(request: Request, services: Services) -> bool:
    if services.team.keyring.open_mode:
        return True
    return is_admin(request) or await _session(request, services) is not None


def _no_admin_key() -> str:
    return (
        "Client keys exist, so the status page needs an admin login, and PROXY_ADMIN_KEY is "
        "not set. Set PROXY_ADMIN_KEY (environment or .env) and restart the proxy, then log "
        "in here with it."
    )


@router.get("/", include_in_schema=False)
async def root() -> Response:
    return RedirectResponse("/status", 302)


@router.get("/status")
async def status(request: Request) -> Response:
    services = services_of(request)
    session = await _session(request, services)
    if not services.team.keyring.open_mode and session is None:
        if services.settings.admin_key is None:
            return _html(page.message_page("Status page locked", _no_admin_key()))
        return _html(page.login_page())
    snapshot = await services.status.get(services)
    return _html(page.status_page(snapshot, csrf=None if session is None else session.csrf))


def _refuse_data(services: Services) -> InvalidKey:
    if services.settings.admin_key is None:
        return InvalidKey(_no_admin_key())
    return InvalidKey(
        "The status data needs an admin session: log in at /status with PROXY_ADMIN_KEY "
        "(client keys do not open it)."
    )


@router.get("/status/snapshot")
async def snapshot(request: Request) -> Response:
    services = services_of(request)
    if not await _may_read(request, services):
        return _secure(error_response(_refuse_data(services)))
    body = orjson.dumps(await services.status.get(services))
    return _secure(Response(body, media_type="application/json"))


@router.get("/status/events")
async def events(request: Request) -> Response:
    services = services_of(request)
    if not await _may_read(request, services):
        return _secure(error_response(_refuse_data(services)))
    response = StreamingResponse(snapshots(services), media_type="text/event-stream")
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return _secure(response)


@router.get("/status/static/{name}")
async def static(name: str) -> Response:
    found = _STATIC.get(name)
    if found is None:
        return _secure(Response(status_code=404))
    body, kind = found
    response = Response(body, media_type=kind)
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-cache"  # revalidated: an upgrade shows at once
    return response


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of each); a too large body is empty."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/status/login")
async def login(request: Request) -> Response:
    services = services_of(request)
    access = _access(request)
    admin_key = services.settings.admin_key
    if admin_key is None:
        return _html(page.message_page("No admin key", _no_admin_key()), 403)
    address = _address(request)
    wait = access.logins.retry_after(address)
    if wait is not None:
        response = _html(page.login_page("Too many failed logins: wait a minute."), 429)
        response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        return response
    given = (await _form(request)).get("admin_key", "")
    if not hmac.compare_digest(given.encode(), admin_key.get_secret_value().encode()):
        access.logins.failed(address)
        log.warning("status page: failed admin login from %s", address)
        return _html(page.login_page("That is not the admin key."), 401)
    session = await access.sessions.create(services.clock())
    response = RedirectResponse("/status", 303)
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=SESSION_SECONDS,
        path="/status",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return _secure(response)


async def _checked(request: Request) -> tuple[Services, Session, dict[str, str]]:
    """The session and form of a state-changing POST; 403 without both and a matching
    CSRF token (nothing changes then)."""
    services = services_of(request)
    session = await _session(request, services)
    form = await _form(request)
    token = form.get("csrf", "")
    if session is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise Forbidden(
            "This action needs an admin session on the status page and its CSRF token: "
            "reload /status, log in, and use the page's own buttons."
        )
    return services, session, form


@router.post("/status/logout")
async def logout(request: Request) -> Response:
    _, session, _ = await _checked(request)
    await _access(request).sessions.end(session.id)
    response = RedirectResponse("/status", 303)
    response.delete_cookie(COOKIE, path="/status", httponly=True, samesite="strict")
    return _secure(response)


def _key_fields(form: dict[str, str]) -> dict[str, Any]:
    """The form as POST /admin/keys' JSON body would carry it, for `KeyCreate`."""
    fields: dict[str, Any] = {"name": form.get("name", "").strip()}
    for limit in page.LIMITS:
        value = form.get(limit, "").strip()
        if value:
            fields[limit] = int(value) if value.isdigit() else value  # a non-number is a 400
    if models := form.get("models", "").strip():
        fields["models"] = models
    fields["paid"] = form.get("paid") == "true"
    return fields


@router.post("/status/keys")
async def create_key(request: Request) -> Response:
    services, session, form = await _checked(request)
    try:
        body = KeyCreate.model_validate(_key_fields(form))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return _html(page.message_page("Key not created", problems), 400)
    try:
        secret = await services.team.key_store.create(**body.model_dump())
    except ProxyError as error:
        return _html(page.message_page("Key not created", error.message), error.status_code)
    await services.team.reload_keys()
    services.status.invalidate()
    snapshot = await services.status.get(services)
    new_key = {"name": body.name, "key": secret}
    return _html(page.status_page(snapshot, csrf=session.csrf, new_key=new_key), 201)


@router.post("/status/keys/{name}/revoke")
async def revoke_key(name: str, request: Request) -> Response:
    services, _, _ = await _checked(request)
    try:
        await services.team.key_store.revoke(name)
    except ProxyError as error:
        return _html(page.message_page("Key not revoked", error.message), error.status_code)
    await services.team.reload_keys()
    services.status.invalidate()
    return _secure(RedirectResponse("/status", 303))
