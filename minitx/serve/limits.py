"""A bound on the size of a request body: larger ones are answered 413 before they are read in
full, whether they announce their length or not (chunked)."""

import json


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 Payload Too Large."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        announced = dict(scope.get("headers", [])).get(b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > self.limit:
            return await self._refuse(send)
        # Read the body here, at most `limit` bytes of it, then hand it on whole: a reader
        # inside the app would turn an error raised while it reads into its own 400.
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replayed(message, receive), send)
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.limit:
                return await self._refuse(send)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replayed(whole, receive), send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"the request body is over {self.limit} bytes"}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replayed(first: dict, receive):
    """A `receive` that gives `first`, then whatever the connection sends next (a disconnect)."""
    given = False

    async def replay():
        nonlocal given
        if not given:
            given = True
            return first
        return await receive()

    return replay
