"""JSON over twisted.web for the management API: a resource whose GET/POST handlers are
coroutines returning JSON-able values; bad input becomes ``{"error": "..."}`` with the
operation's HTTP status (400, 404, 409, 502), never a traceback."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from exchange_emu.admin.errors import ManagementError
from exchange_emu.admin.filters import FilterError
from exchange_emu.admin.identity import IdentityError

log = Logger()

Handler = Callable[[IRequest], Awaitable[Any]]


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, indent=1).encode() + b"\n"


def json_answer(request: Any, status: int, body: Any) -> bytes:
    """Set ``request``'s status and JSON content type; the body to return from render_*."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode()


def send_json(request: Any, status: int, body: Any) -> None:
    """Answer ``request`` with ``body`` as JSON (it must not have been answered yet)."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.write(json_bytes(body))
    request.finish()


def arg(request: Any, name: str) -> str | None:
    """A query parameter (the first if repeated), or None."""
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def body(request: Any) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); 400 if it is not a JSON object."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as e:
        raise ManagementError(f"the request body is not JSON ({e}); send a JSON object") \
            from None
    if not isinstance(parsed, dict):
        raise ManagementError("the request body must be a JSON object")
    return parsed


def error_status(error: BaseException) -> int | None:
    """The HTTP status of an operation's refusal; None for a bug."""
    if isinstance(error, ManagementError):
        return error.status
    if isinstance(error, IdentityError | FilterError):
        return 400
    return None


class JsonResource(resource.Resource):
    """A management API resource: ``get``/``post`` coroutines answer with JSON; a handler
    that wrote its own answer (a stream) returns :data:`STREAMED`. Children can be added
    with putChild."""

    def __init__(self, get: Handler | None = None, post: Handler | None = None) -> None:
        super().__init__()
        self.handlers = {b"GET": get, b"POST": post}

    def getChild(self, path: bytes, request: Any) -> resource.Resource:
        if path == b"":
            return self
        return JsonNotFound()

    def render(self, request: Any) -> bytes | int:
        handler = self.handlers.get(request.method)
        if handler is None:
            allowed = [m.decode() for m, h in self.handlers.items() if h is not None]
            request.setResponseCode(405)
            request.setHeader(b"content-type", b"application/json")
            return json_bytes({"error": f"use {' or '.join(allowed) or 'a sub-path'}"})
        d = Deferred.fromCoroutine(_call(handler, request))
        d.addCallbacks(lambda result: _answer(request, result),
                       lambda failure: refuse(request, failure))
        return server.NOT_DONE_YET


class JsonNotFound(resource.Resource):
    """Any path the management API does not have: a JSON 404 naming where to look."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        path = request.path.decode("utf-8", "replace")
        return json_bytes({"error": f"no management API at {path}; the paths are in "
                                    "docs/management.md (e.g. GET /api/queues)"})


class ApiRoot(resource.Resource):
    """``/api``: its children are the operations; anything else is a JSON 404."""

    def getChild(self, path: bytes, request: Any) -> resource.Resource:
        return JsonNotFound()


class _Streamed:
    """Returned by a handler that wrote and finished its answer itself."""


STREAMED = _Streamed()


async def _call(handler: Handler, request: Any) -> Any:
    return await handler(request)


def _answer(request: Any, result: Any) -> None:
    if result is STREAMED or request.finished or getattr(request, "_disconnected", False):
        return
    send_json(request, 200, result)


def refuse(request: Any, failure: Any) -> None:
    """Answer with the operation's refusal (or a 500 for a bug, logged)."""
    status = error_status(failure.value)
    if status is None:
        log.failure("management API {path}", failure, path=request.path)
        status, message = 500, f"internal error: {failure.getErrorMessage()}"
    else:
        message = str(failure.value)
    if request.finished or getattr(request, "_disconnected", False):
        return
    if request.startedWriting:
        request.finish()  # a stream broke off: nothing else can be said
        return
    send_json(request, status, {"error": message})
