"""The console's routes: a FastAPI router the proxy mounts at ``/console``, and a small app
of its own for ``guardrails console``.

Read-only by construction: it opens its own engine on the audit database and only runs
SELECTs (the verify job too). Every page needs a session from an admin API key (or the key
itself as ``Authorization: Bearer``, for scripts); a key bound to one tenant sees only that
tenant's events, and another tenant's event or policy answers 404 exactly as a missing one.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import Engine

from audit import AuditError, StoredEvent, inclusion_proof_for
from audit.engine import create_audit_engine, safe_url
from guardrails.console.auth import SESSION_COOKIE, ConsoleUser, SessionSigner, console_secret
from guardrails.console.charts import hbar_chart, line_chart, stacked_bar_chart
from guardrails.console.data import (
    chain_rows,
    chart_data,
    event_for,
    event_page,
    highlight,
    iter_visible,
    parse_filter,
    policies_seen,
    policy_text_for,
)
from guardrails.console.jobs import VerifyJob

if TYPE_CHECKING:  # the proxy package imports the console: no import back at run time
    from guardrails.proxy.keys import KeyRing

__all__ = [
    "CONSOLE_PREFIX",
    "PAGE_SIZE",
    "ConsoleSettings",
    "create_console_app",
    "create_console_router",
    "event_document",
]

CONSOLE_PREFIX = "/console"
PAGE_SIZE = 50
_ACTIONS = ("allow", "flag", "redact", "block")
_FIELDS = (
    ("since", "since", "24h, 7d or ISO"),
    ("until", "until", "ISO time"),
    ("tenant", "tenant", ""),
    ("user", "user", ""),
    ("model", "model", ""),
    ("action", "action", ""),
    ("rule", "rule", "rule id"),
    ("contains", "text contains", "any case"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSettings:
    """What a console needs: the audit database, the admin keys and the session secret.

    ``keys`` is called on every request (the proxy passes its live, hot-reloaded key ring);
    ``secret`` signs session cookies (default: `console_secret`, shared by the workers of
    one ``serve``); ``hmac_key`` is the chains' HMAC key for the verify job.
    """

    audit_url: str
    keys: Callable[[], KeyRing | None]
    secret: bytes | None = None
    hmac_key: bytes | None = None
    secure_cookie: bool = False


def event_document(event: StoredEvent) -> dict[str, Any]:
    """An event as JSON-ready data (the same shape as ``guardrails audit query --json``)."""
    return event.to_document()


class _Console:
    """One console instance: its templates, its engine and its verify job."""

    def __init__(self, settings: ConsoleSettings, prefix: str) -> None:
        self.settings = settings
        self.prefix = prefix
        self.signer = SessionSigner(settings.secret or console_secret(), settings.keys)
        folder = str(files("guardrails.console").joinpath("templates"))
        self.templates = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self.job = VerifyJob(settings.audit_url, self.engine, hmac_key=settings.hmac_key)

    def engine(self) -> Engine:
        """The console's read engine (opened on first use; the database must exist)."""
        with self._lock:
            if self._engine is None:
                self._engine = create_audit_engine(self.settings.audit_url, must_exist=True)
            return self._engine

    def close(self) -> None:
        """Wait for a running verify, then release the connections."""
        self.job.wait(timeout=30)
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def user(self, request: Request) -> ConsoleUser | None:
        """The logged-in user of this request (session cookie or bearer admin key)."""
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self.signer.bearer(token)
        return self.signer.user(request.cookies.get(SESSION_COOKIE))

    def page(
        self, template: str, user: ConsoleUser | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """Render ``template`` as a full page."""
        html = self.templates.get_template(template).render(
            prefix=self.prefix, user=user, **context
        )
        return HTMLResponse(
            html,
            status_code=status,
            headers={
                "cache-control": "no-store",
                "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                "style-src 'self'; frame-ancestors 'none'",
                "x-content-type-options": "nosniff",
                "referrer-policy": "same-origin",
            },
        )

    def message(self, user: ConsoleUser | None, status: int, heading: str, text: str) -> Response:
        """An error page with one clear line."""
        return self.page("message.html", user, status, heading=heading, message=text)


def _store_error(console: _Console, user: ConsoleUser, exc: Exception) -> Response:
    where = safe_url(console.settings.audit_url)
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return console.message(user, 503, "Audit log unavailable", f"reading {where}: {detail}")


def create_console_router(settings: ConsoleSettings, *, prefix: str = CONSOLE_PREFIX) -> APIRouter:
    """The console's routes under ``prefix``; the router's ``console_close`` attribute
    releases its engine (call it at shutdown)."""
    console = _Console(settings, prefix)
    router = APIRouter(prefix=prefix, include_in_schema=False)
    router.console_close = console.close  # type: ignore[attr-defined]

    def need_user(request: Request) -> ConsoleUser | Response:
        user = console.user(request)
        if user is not None:
            return user
        if request.headers.get("authorization") or not request.url.path.endswith(
            ("/", "/charts", "/chains", "/policies")
        ):
            return PlainTextResponse("Log in with an admin API key.", status_code=401)
        return RedirectResponse(f"{prefix}/login", status_code=303)

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        types = {"console.css": "text/css", "console.js": "text/javascript"}
        if name not in types:
            return PlainTextResponse("Not found.", status_code=404)
        body = files("guardrails.console").joinpath("static", name).read_bytes()
        return Response(body, media_type=types[name], headers={"cache-control": "max-age=300"})

    @router.get("/login")
    def login_form(request: Request) -> Response:
        if console.user(request) is not None:
            return RedirectResponse(f"{prefix}/", status_code=303)
        return console.page("login.html", None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        body = (await request.body())[:4096].decode("utf-8", "replace")
        key = (parse_qs(body).get("key") or [""])[0]
        found = console.signer.login(key) if key else None
        if found is None:
            error = "That is not an active admin API key."
            if settings.keys() is None:
                error = "This server has no keys file, so nobody can log in to the console."
            return console.page("login.html", None, 401, error=error)
        _user, cookie = found
        response = RedirectResponse(f"{prefix}/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=8 * 3600,
            path=prefix,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookie,
        )
        return response

    @router.post("/logout")
    def logout() -> Response:
        response = RedirectResponse(f"{prefix}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=prefix)
        return response

    @router.get("/")
    def events(request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        params = dict(request.query_params)
        form = parse_filter(params, user)
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        try:
            rows, more = event_page(console.engine(), form, page=page, size=PAGE_SIZE)
        except (AuditError, Exception) as exc:  # an unreachable store is a page, not a 500
            return _store_error(console, user, exc)
        return console.page(
            "events.html",
            user,
            nav="events",
            form=form,
            events=rows,
            page=page,
            more=more,
            fields=_FIELDS,
            actions=_ACTIONS,
            rules=lambda event: event.rule_ids,
        )

    def export(request: Request, fmt: str) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        form = parse_filter(dict(request.query_params), user)
        if form.error:
            return PlainTextResponse(form.error, status_code=400)
        try:
            engine = console.engine()
        except AuditError as exc:
            return PlainTextResponse(str(exc), status_code=503)

        def lines() -> Iterator[str]:
            if fmt == "jsonl":
                for event in iter_visible(engine, form):
                    yield json.dumps(event_document(event), ensure_ascii=False) + "\n"
                return
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(StoredEvent.CSV_COLUMNS)
            for event in iter_visible(engine, form):
                writer.writerow(event.csv_row())
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
            yield buffer.getvalue()

        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(
            lines(),
            media_type=f"{media}; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="audit-events.{fmt}"'},
        )

    @router.get("/export.csv")
    def export_csv(request: Request) -> Response:
        return export(request, "csv")

    @router.get("/export.jsonl")
    def export_jsonl(request: Request) -> Response:
        return export(request, "jsonl")

    @router.get("/events/{event_id}")
    def event(event_id: str, request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        try:
            found = event_for(console.engine(), event_id, user)
        except Exception as exc:
            return _store_error(console, user, exc)
        if found is None:
            return console.message(user, 404, "No such event", f"No event {event_id!r} here.")
        exact = found.text_storage == "full"
        findings = found.findings if exact else ()
        return console.page(
            "event.html",
            user,
            nav="events",
            e=found,
            exact=exact or not found.findings,
            prompt=highlight(found.prompt, findings, "input"),
            output=highlight(found.output, findings, "output"),
        )

    @router.get("/events/{event_id}/proof.json")
    def proof(event_id: str, request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        try:
            visible = event_for(console.engine(), event_id, user)
            if visible is None:
                raise LookupError(f"no event with id {event_id!r}")
            doc = inclusion_proof_for(settings.audit_url, event_id)
        except LookupError as exc:
            return JSONResponse({"error": str(exc.args[0])}, status_code=404)
        except AuditError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(
            doc,
            headers={"content-disposition": f'attachment; filename="proof-{event_id}.json"'},
        )

    @router.get("/charts")
    def charts(request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        params = dict(request.query_params)
        params.setdefault("since", "7d")
        form = parse_filter(params, user)
        try:
            data = chart_data(console.engine(), form)
        except Exception as exc:
            return _store_error(console, user, exc)
        rendered = {
            "actions": stacked_bar_chart(
                f"events per {data.bucket} by action", data.buckets, data.by_action
            ),
            "rules": hbar_chart("top rules", data.top_rules),
            "block_rate": line_chart(
                "block rate per policy version", data.buckets, data.block_rate, y_max=1.0
            ),
            "latency": line_chart("latency percentiles", data.buckets, data.latency, unit=" ms"),
        }
        return console.page(
            "charts.html",
            user,
            nav="charts",
            form=form,
            data=data,
            charts={k: Markup(v) for k, v in rendered.items()},  # built escaped (charts.py)
        )

    @router.get("/chains")
    def chains(request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        if user.tenant is not None:
            return console.message(
                user, 403, "Chains", "The chains span every tenant: they need an all-tenant key."
            )
        try:
            rows = chain_rows(console.engine())
        except Exception as exc:
            return _store_error(console, user, exc)
        return console.page(
            "chains.html", user, nav="chains", chains=rows, job=console.job.snapshot()
        )

    @router.post("/chains/verify")
    def verify_start(request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        if user.tenant is not None:
            return PlainTextResponse("Needs an all-tenant admin key.", status_code=403)
        try:
            console.job.start()
        except Exception as exc:
            return _store_error(console, user, exc)
        return RedirectResponse(f"{prefix}/chains", status_code=303)

    @router.get("/chains/verify.json")
    def verify_status(request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        if user.tenant is not None:
            return JSONResponse({"error": "needs an all-tenant admin key"}, status_code=403)
        return JSONResponse(console.job.snapshot(), headers={"cache-control": "no-store"})

    @router.get("/policies")
    def policies(request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        try:
            seen = policies_seen(console.engine(), user)
        except Exception as exc:
            return _store_error(console, user, exc)
        return console.page("policies.html", user, nav="policies", policies=seen)

    @router.get("/policies/diff")
    def policy_diff(request: Request, a: str = "", b: str = "") -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        from guardrails.exceptions import PolicyError
        from guardrails.policy.diff import diff_policies, policy_from_source

        try:
            texts = [policy_text_for(console.engine(), d, user) for d in (a, b)]
        except Exception as exc:
            return _store_error(console, user, exc)
        if texts[0] is None or texts[1] is None:
            return console.message(user, 404, "Policy diff", "Pick two policy versions seen here.")
        try:
            before = policy_from_source(texts[0][2], label=f"{texts[0][0]}@{texts[0][1]}")
            after = policy_from_source(texts[1][2], label=f"{texts[1][0]}@{texts[1][1]}")
        except PolicyError as exc:
            return console.message(user, 422, "Policy diff", f"A stored policy did not load: {exc}")
        diff = diff_policies(
            before,
            after,
            a_label=f"{texts[0][0]} {texts[0][1]} ({a[:12]})",
            b_label=f"{texts[1][0]} {texts[1][1]} ({b[:12]})",
        )
        return console.page("diff.html", user, nav="policies", diff=diff)

    @router.get("/policies/{digest}")
    def policy(digest: str, request: Request) -> Response:
        user = need_user(request)
        if isinstance(user, Response):
            return user
        try:
            found = policy_text_for(console.engine(), digest, user)
        except Exception as exc:
            return _store_error(console, user, exc)
        if found is None:
            return console.message(user, 404, "No such policy", f"No policy {digest!r} here.")
        name, version, text = found
        return console.page(
            "policy.html",
            user,
            nav="policies",
            name=name,
            version=version,
            text=text,
            digest=digest,
        )

    return router


def create_console_app(settings: ConsoleSettings) -> FastAPI:
    """A stand-alone console (``guardrails console``): the router at ``/console`` and ``/``
    redirecting there."""
    router = create_console_router(settings)

    import contextlib
    from collections.abc import AsyncIterator

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        router.console_close()  # type: ignore[attr-defined]

    app = FastAPI(
        title="guardrails audit console",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{CONSOLE_PREFIX}/", status_code=307)

    return app
