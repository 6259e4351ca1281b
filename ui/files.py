"""What the page may fetch besides its own code: photo thumbnails and full-size photos, each named by a key the
server made (never by a file path), and a back-off on repeated wrong logins.

    GET /thumb/<40-hex key>.jpg   a cached JPEG thumbnail of an indexed photo (``Thumbnails.url(path, origin)``)
    GET /photo/<image id>         the indexed photo itself, full size (JPEG / PNG / WebP / GIF as stored, any
                                  other format rendered to JPEG); only rows of the index database, only
                                  regular image files

Nothing else under an indexed folder can be named: Gradio's own ``/gradio_api/file=`` route is given no
indexed folder (``allowed_paths`` stays empty), so a key file or a text file beside the photos is never served.
With ``--auth`` both routes need the page's login, and ``LoginBackoff`` answers 429 to an address that keeps
sending wrong passwords, for a time that doubles with each further failure.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Callable


THUMB_SIZE = 512
THUMB_ROUTE = "/thumb"
PHOTO_ROUTE = "/photo"
FULL_MAX_SIDE = 4096            # other formats (HEIC, TIFF, BMP …) are rendered to a JPEG at most this big
_BROWSER_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
NO_KEY = "0" * 40               # an unreadable photo's thumbnail key: the route answers 404 (a gap in the grid)


def _is_key(key: str) -> bool:
    return len(key) == 40 and all(c in "0123456789abcdef" for c in key)


class Thumbnails:
    """Cached JPEG thumbnails (``<dir>/<k[:2]>/<key>.jpg``); the key is the sha1 of the resolved path, mtime and
    size, so a changed photo gets a new thumbnail and a URL reveals nothing about the path."""

    def __init__(self, folder: str | os.PathLike, size: int = THUMB_SIZE):
        self.dir = Path(folder)
        self.size = int(size)
        self._keys: dict[str, tuple] = {}  # path -> ((mtime_ns, size), key)
        self._lock = threading.Lock()

    def key(self, path: str) -> str | None:
        """The thumbnail key of a photo, or None when the file cannot be read."""
        p = str(path)
        try:
            st = os.stat(p)
        except OSError:
            return None
        hit = self._keys.get(p)
        if hit is not None and hit[0] == (st.st_mtime_ns, st.st_size):
            return hit[1]
        key = hashlib.sha1(f"{Path(p).resolve()}|{st.st_mtime_ns}|{st.st_size}|{self.size}".encode()).hexdigest()
        with self._lock:
            if len(self._keys) > 200_000:
                self._keys.clear()
            self._keys[p] = ((st.st_mtime_ns, st.st_size), key)
        return key

    def file(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.jpg"

    def ready(self, path: str) -> str | None:
        """The key of a thumbnail already on disk (None when it still has to be made)."""
        key = self.key(path)
        return key if key and self.file(key).exists() else None

    def make(self, path: str) -> str | None:
        """Make (once) and return the thumbnail key of ``path``; None when the photo cannot be decoded."""
        from dcclip_core.atomic import atomic_path
        from PIL import Image, ImageOps
        key = self.key(path)
        if key is None:
            return None
        out = self.file(key)
        if out.exists():
            return key
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(path) as im:
                im.draft("RGB", (self.size, self.size))
                im = ImageOps.exif_transpose(im)
                im = im.convert("RGB")
                im.thumbnail((self.size, self.size))
                with atomic_path(out) as tmp:
                    im.save(tmp, "JPEG", quality=85)
        except Exception:
            return None
        return key

    def url(self, path: str, origin: str) -> str:
        """The absolute URL of a photo's thumbnail (made on first use; an unreadable photo gets a 404 URL)."""
        return f"{origin}{THUMB_ROUTE}/{self.make(path) or NO_KEY}.jpg"

    def url_of_key(self, key: str | None, origin: str) -> str:
        return f"{origin}{THUMB_ROUTE}/{key or NO_KEY}.jpg"


def photo_url(image_id: int | None, origin: str = "") -> str | None:
    return None if image_id is None else f"{origin}{PHOTO_ROUTE}/{int(image_id)}"


def origin_of(request) -> str:
    """The page's origin (scheme://host[:port]) as the browser sees it, for absolute thumbnail URLs."""
    try:
        h = request.headers
        host = (h.get("x-forwarded-host") or h.get("host") or "").split(",")[0].strip()
        proto = (h.get("x-forwarded-proto") or "http").split(",")[0].strip()
    except Exception:
        host, proto = "", "http"
    return f"{proto}://{host or '127.0.0.1'}"


def logged_in(request) -> bool:
    """True when the page needs no login or the request carries the session cookie Gradio's /login set.
    (Gradio keeps its check inside its own route handlers; this reads the same app.tokens table.)"""
    app = request.app
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    cid = getattr(app, "cookie_id", "")
    token = request.cookies.get(f"access-token-{cid}") or request.cookies.get(f"access-token-unsecure-{cid}")
    return bool(getattr(app, "tokens", {}).get(token))


def routes(thumbs: Thumbnails, photo_path: Callable[[int], str | None]) -> list:
    """The GET /thumb/<key>.jpg and GET /photo/<id> routes. ``photo_path(id)`` is the indexed file of an image id
    (None when there is no such row); both routes answer 401 without the login, 404 for anything else."""
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    async def thumb(request):
        if not logged_in(request):
            return Response(status_code=401)
        key = request.path_params["key"]
        f = thumbs.file(key) if _is_key(key) else None
        if f is None or not f.is_file():
            return Response(status_code=404)
        return FileResponse(f, media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400, immutable"})

    async def photo(request):
        import asyncio
        if not logged_in(request):
            return Response(status_code=401)
        try:
            image_id = int(request.path_params["image_id"])
        except (TypeError, ValueError):
            return Response(status_code=404)
        served = await asyncio.to_thread(_full_size, photo_path(image_id))
        if served is None:
            return Response(status_code=404)
        kind, body = served
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        if isinstance(body, Path):
            return FileResponse(body, media_type=kind, headers=headers)
        return Response(body, media_type=kind, headers=headers)

    return [Route(THUMB_ROUTE + "/{key}.jpg", thumb, methods=["GET"]),
            Route(PHOTO_ROUTE + "/{image_id}", photo, methods=["GET"])]


def _full_size(path: str | None):
    """(media type, file Path or JPEG bytes) of an indexed photo, or None when it is not a readable image file."""
    import io
    from PIL import Image, ImageOps
    from dcclip_core.preprocess import IMAGE_EXTENSIONS      # lazily: the page is served before the model loads
    if not path:
        return None
    p = Path(path)
    if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
        return None
    try:
        with Image.open(p) as im:
            fmt = im.format
            if fmt in _BROWSER_TYPES:
                return _BROWSER_TYPES[fmt], p
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((FULL_MAX_SIDE, FULL_MAX_SIDE))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            return "image/jpeg", buf.getvalue()
    except Exception:
        return None


class LoginBackoff:
    """ASGI middleware: after ``free`` wrong logins from one address, further POST /login requests from it are
    answered 429 (with Retry-After) until ``base * 2**(failures - free - 1)`` seconds (at most ``cap``) have
    passed since its last failure; a successful login clears the address. Counts are forgotten after ``forget``
    seconds without a failure. The client address is the socket's (forwarded headers are not trusted)."""

    def __init__(self, app, free: int = 3, base: float = 2.0, cap: float = 300.0, forget: float = 900.0,
                 clock: Callable[[], float] = time.monotonic):
        self.app, self.free, self.base, self.cap, self.forget, self.clock = app, free, base, cap, forget, clock
        self._fails: dict[str, tuple[int, float]] = {}   # address -> (failures, time of the last one)
        self._lock = threading.Lock()

    def wait_for(self, addr: str) -> float:
        """Seconds ``addr`` must still wait before its next login attempt (0: may try now)."""
        with self._lock:
            n, last = self._fails.get(addr, (0, 0.0))
        now = self.clock()
        if n and now - last > self.forget:
            with self._lock:
                self._fails.pop(addr, None)
            return 0.0
        if n < self.free:
            return 0.0
        return max(0.0, min(self.cap, self.base * 2 ** (n - self.free)) - (now - last))

    def record(self, addr: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._fails.pop(addr, None)
                return
            n, _ = self._fails.get(addr, (0, 0.0))
            self._fails[addr] = (n + 1, self.clock())
            if len(self._fails) > 100_000:      # a flood of addresses: keep the newest half
                for k, _v in sorted(self._fails.items(), key=lambda kv: kv[1][1])[:50_000]:
                    self._fails.pop(k, None)

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        if scope.get("method") != "POST" or path.rstrip("/").rsplit("/", 1)[-1] != "login":
            return await self.app(scope, receive, send)
        addr = (scope.get("client") or ("?", 0))[0]
        wait = self.wait_for(addr)
        if wait > 0:
            from starlette.responses import JSONResponse
            resp = JSONResponse({"detail": f"Too many wrong logins from this address: try again in "
                                           f"{int(wait) + 1} s."}, status_code=429,
                                headers={"Retry-After": str(int(wait) + 1)})
            return await resp(scope, receive, send)
        status = {}

        async def watch(message):
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 0))
            await send(message)

        await self.app(scope, receive, watch)
        code = status.get("code", 0)
        if code == 200:
            self.record(addr, True)
        elif code in (400, 401, 403):
            self.record(addr, False)
