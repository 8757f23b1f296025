"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None) -> JSONResponse:
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def install(app: FastAPI) -> None:
    """Render HTTP and validation errors as problem details."""

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return exc.problem()
        title = exc.detail if isinstance(exc.detail, str) else "Error"
        response = problem(exc.status_code, title)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()[:10]
        )
        return problem(422, "Invalid request", detail)


class BodyTooLarge(HTTPException):
    """A request body over the limit (see :class:`BodyLimit`)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, "Content Too Large")
        self.max_bytes = max_bytes

    def problem(self) -> JSONResponse:
        return problem(
            413, "Content Too Large", f"a request body may have at most {self.max_bytes} bytes"
        )


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with a 413 problem: at once when its
    ``Content-Length`` says so, else when the bytes read so far pass the limit (a body
    sent without a length, chunked). Nothing larger is ever buffered.

    Not FastAPI's own ``max_body_size``: that answers a declared length in plain text,
    and every error of this API is a problem document.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await BodyTooLarge(self.max_bytes).problem()(scope, receive, send)
            return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)  # rendered by http_problem
            return message

        await self.app(scope, counted, send)
