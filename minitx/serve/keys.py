"""Access keys for `minitx serve`: from a file (one key per line, read again on SIGHUP, so keys
rotate without a restart) or the MINITX_API_KEY environment variable. A request must carry
`Authorization: Bearer KEY`; keys are compared in constant time."""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from minitx.errors import UserError

log = logging.getLogger(__name__)

ENVIRONMENT_KEY = "MINITX_API_KEY"


class ApiKeys:
    def __init__(self, path: Path | None = None, key: str | None = None):
        self.path = path
        self.keys = self._read() if path is not None else _checked([key or ""], ENVIRONMENT_KEY)

    @classmethod
    def configured(cls, path: Path | None) -> ApiKeys | None:
        """The keys of `--api-key-file`, else of MINITX_API_KEY, else None (an open server)."""
        if path is not None:
            return cls(path=path)
        if os.environ.get(ENVIRONMENT_KEY):
            return cls(key=os.environ[ENVIRONMENT_KEY])
        return None

    def reload(self) -> None:
        """Read the key file again (on SIGHUP); a file that cannot be read keeps the old keys."""
        if self.path is None:
            return
        try:
            self.keys = self._read()
        except UserError as error:
            log.warning(f"kept the previous API keys: {error}")
            return
        log.info(f"read {len(self.keys)} API key(s) from {self.path}")

    def allows(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries one of the keys. Every key is compared, each
        in constant time, so the time taken says nothing of which keys exist."""
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return False
        given_bytes, found = given.strip().encode(), False
        for key in self.keys:
            found |= hmac.compare_digest(given_bytes, key.encode())
        return found

    def guard(self, app) -> None:
        """Make every route of the FastAPI `app` but GET /health (open for load balancers'
        probes) answer 401, naming no key, to a request without one of the keys."""
        from fastapi.responses import JSONResponse

        @app.middleware("http")
        async def require_key(request, call_next):
            if request.url.path != "/health" and not self.allows(
                request.headers.get("authorization")
            ):
                return JSONResponse(
                    status_code=401,
                    content={"detail": "missing or wrong API key: send Authorization: Bearer KEY"},
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await call_next(request)

    def _read(self) -> list[str]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read the API key file {self.path} ({error})") from None
        return _checked(lines, str(self.path))


def _checked(lines: list[str], where: str) -> list[str]:
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not keys:
        raise UserError(f"{where} holds no API key; put one key per line")
    return keys
