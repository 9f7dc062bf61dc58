"""What the Google Drive and Dropbox fakes share: an HTTP server on 127.0.0.1, the
OAuth 2 endpoints (authorize with PKCE, token: authorization_code and refresh_token),
bearer-token checks, throttling on demand (429 + Retry-After), and a request log the
tests read to prove a ranged read did not download the whole file.

Control endpoints (tests only, never part of a provider's API):
  POST /_fake/throttle  {"count": N, "retry_after": S, "status": 429}
  GET  /_fake/log       [{"method", "path", "range", "status", "sent"}]
  POST /_fake/grant     {"refresh_token": T}: T works as if a sign-in had issued it
  POST /_fake/revoke    every token issued so far stops working (401)
  POST /_fake/lose      {"chunks": [i, ...]}: the answers to the i-th upload-session
                        chunk requests (0 = the first after this call) are lost: the
                        chunk is taken, then the connection closes without an answer

This fake must never listen on anything but 127.0.0.1.
"""

import base64
import hashlib
import json
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.codes = {}  # code -> (challenge, redirect_uri, client_id)
        self.access = set()
        self.refresh = set()
        self.throttle = {"count": 0, "retry_after": 1, "status": 429}
        # The account's storage is used up: uploads get the provider's own answer.
        self.full = False
        self.log = []
        self.lose = set()  # upload chunk requests whose answer is lost
        self.chunk_no = 0


class Handler(BaseHTTPRequestHandler):
    """Subclasses set `state` and implement `api(method, path, query, body)`."""

    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, *args):
        pass

    # -- plumbing -------------------------------------------------------------
    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body=b"", headers=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        with self.state.lock:
            self.state.log.append(
                {
                    "method": self.command,
                    "path": self.path.split("?")[0],
                    "range": self.headers.get("Range"),
                    "status": status,
                    "sent": len(body),
                    "received": getattr(self, "received", 0),
                }
            )

    def chunk_answer_lost(self):
        """Counts an upload chunk request; True if its answer must be lost."""
        with self.state.lock:
            n = self.state.chunk_no
            self.state.chunk_no += 1
            return n in self.state.lose

    def lose_answer(self):
        """Closes the connection without answering (the request was taken)."""
        with self.state.lock:
            self.state.log.append({"method": self.command, "path": self.path.split("?")[0], "range": None, "status": 0, "sent": 0, "received": getattr(self, "received", 0)})
        self.close_connection = True

    def send_range(self, data, extra_headers=None):
        """Answers with `data`, or the part the Range header asks for (206/416)."""
        rng = self.headers.get("Range")
        headers = dict(extra_headers or {})
        headers["Accept-Ranges"] = "bytes"
        if not rng or not rng.startswith("bytes="):
            return self.send(200, data, headers, "application/octet-stream")
        start_s, _, end_s = rng[6:].partition("-")
        size = len(data)
        if start_s == "":
            start = max(0, size - int(end_s))
            end = size - 1
        else:
            start = int(start_s)
            end = int(end_s) if end_s else size - 1
        if start >= size:
            headers["Content-Range"] = f"bytes */{size}"
            return self.send(416, b"", headers)
        end = min(end, size - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return self.send(206, data[start : end + 1], headers, "application/octet-stream")

    def _dispatch(self):
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        body = self._body()
        self.received = len(body)
        path = parsed.path
        if path.startswith("/_fake/"):
            return self.control(path, body)
        if self.is_token_path(path):
            return self.token(query, body)
        if self.is_authorize_path(path):
            return self.authorize(query)
        with self.state.lock:
            t = self.state.throttle
            if t["count"] > 0:
                t["count"] -= 1
                return self.send(
                    t["status"],
                    self.throttled_body(),
                    {"Retry-After": str(t["retry_after"])},
                )
        auth = self.headers.get("Authorization", "")
        with self.state.lock:
            ok = auth.startswith("Bearer ") and auth[7:] in self.state.access
        if not ok:
            return self.send(401, self.unauthorized_body())
        return self.api(self.command, path, query, body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = _dispatch

    # -- control --------------------------------------------------------------
    def control(self, path, body):
        with self.state.lock:
            if path == "/_fake/throttle":
                self.state.throttle.update(json.loads(body or b"{}"))
                return self.send(200, {})
            if path == "/_fake/full":
                self.state.full = bool(json.loads(body or b"{}").get("full"))
                return self.send(200, {})
            if path == "/_fake/log":
                return self.send(200, self.state.log)
            if path == "/_fake/grant":
                self.state.refresh.add(json.loads(body)["refresh_token"])
                return self.send(200, {})
            if path == "/_fake/lose":
                self.state.lose = set(json.loads(body)["chunks"])
                self.state.chunk_no = 0
                return self.send(200, {})
            if path == "/_fake/revoke":
                self.state.access.clear()
                self.state.refresh.clear()
                return self.send(200, {})
        return self.fake_control(path, body)

    def fake_control(self, path, body):
        return self.send(404, {"error": "no such control"})

    # -- OAuth 2 --------------------------------------------------------------
    def authorize(self, q):
        """The consent page: a real provider asks the user; this one says yes."""
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return self.send(400, {"error": "invalid_request", "why": "code + S256 PKCE required"})
        if not q.get("redirect_uri", "").startswith("http://127.0.0.1:"):
            return self.send(400, {"error": "invalid_request", "why": "loopback redirect required"})
        code = secrets.token_urlsafe(16)
        with self.state.lock:
            self.state.codes[code] = (q["code_challenge"], q["redirect_uri"], q.get("client_id"))
        target = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
        self.send(302, b"", {"Location": target})

    def token(self, query, body):
        form = dict(query)
        form.update(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        # Clients may send their id and secret by HTTP basic auth instead.
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            cid, _, _ = base64.b64decode(basic[6:]).decode().partition(":")
            form.setdefault("client_id", urllib.parse.unquote(cid))
        grant = form.get("grant_type")
        with self.state.lock:
            if grant == "authorization_code":
                entry = self.state.codes.pop(form.get("code", ""), None)
                if entry is None:
                    return self.send(400, {"error": "invalid_grant"})
                challenge, redirect_uri, _client = entry
                verifier = form.get("code_verifier", "")
                want = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if want != challenge or form.get("redirect_uri") != redirect_uri:
                    return self.send(400, {"error": "invalid_grant", "why": "PKCE or redirect mismatch"})
                refresh = "rt-" + secrets.token_urlsafe(16)
                self.state.refresh.add(refresh)
            elif grant == "refresh_token":
                refresh = form.get("refresh_token", "")
                if refresh not in self.state.refresh:
                    return self.send(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
            else:
                return self.send(400, {"error": "unsupported_grant_type"})
            access = "at-" + secrets.token_urlsafe(16)
            self.state.access.add(access)
        answer = {"access_token": access, "expires_in": 3600, "token_type": "Bearer"}
        if grant == "authorization_code":
            answer["refresh_token"] = refresh
        self.send(200, answer)


def serve(handler_cls, state, port):
    handler_cls.state = state
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_cls)
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()
