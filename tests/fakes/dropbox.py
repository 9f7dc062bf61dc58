"""A fake of the Dropbox API v2 endpoints songfs (through OpenDAL) uses, on 127.0.0.1:
files/upload, files/download (with Range), files/get_metadata, files/list_folder
(+ /continue, paged), files/delete_v2, files/create_folder_v2, files/copy_v2,
files/move_v2, upload sessions (upload_session/start, append_v2, finish, with
Dropbox's `incorrect_offset` answer), and the OAuth endpoints of fakebase.
Like Dropbox, files/upload refuses a body over 150 MiB (use a session). Errors are Dropbox's: HTTP 409
with an `error_summary` such as "path/not_found/..".

Run: python3 dropbox.py PORT  (prints "LISTENING <port>"; 0 picks a free port).
"""

import hashlib
import itertools
import json
import sys
import time

import fakebase


class Box(fakebase.State):
    def __init__(self):
        super().__init__()
        self.files = {}  # lower-case path -> (display path, bytes)
        self.folders = {"": ""}  # lower-case path -> display path
        self.cursors = {}
        self.ids = itertools.count(1)
        self.page_limit = 500  # entries per list page, whatever the client asks
        self.sessions = {}  # session id -> bytearray

UPLOAD_MAX = 150 << 20


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def file_meta(path, data):
    return {
        ".tag": "file",
        "name": path.rsplit("/", 1)[-1],
        "path_lower": path.lower(),
        "path_display": path,
        "id": "id:" + hashlib.sha1(path.lower().encode()).hexdigest()[:16],
        "client_modified": now(),
        "server_modified": now(),
        "rev": "015" + hashlib.sha1(data).hexdigest()[:12],
        "size": len(data),
        "content_hash": hashlib.sha256(data).hexdigest(),
    }


def folder_meta(path):
    return {
        ".tag": "folder",
        "name": path.rsplit("/", 1)[-1],
        "path_lower": path.lower(),
        "path_display": path,
        "id": "id:" + hashlib.sha1(path.lower().encode()).hexdigest()[:16],
        "client_modified": now(),
    }


def norm(path):
    return path.rstrip("/")


class Handler(fakebase.Handler):
    def is_token_path(self, path):
        return path == "/oauth2/token"

    def is_authorize_path(self, path):
        return path == "/oauth2/authorize"

    def throttled_body(self):
        return {"error_summary": "too_many_requests/..", "error": {"reason": {".tag": "too_many_requests"}, "retry_after": 1}}

    def unauthorized_body(self):
        return {"error_summary": "invalid_access_token/..", "error": {".tag": "invalid_access_token"}}

    def conflict(self, summary):
        return self.send(409, {"error_summary": summary, "error": {".tag": summary.split("/")[0]}})

    def parents_of(self, path):
        parts = path.split("/")
        for i in range(2, len(parts)):
            p = "/".join(parts[:i])
            self.state.folders.setdefault(p.lower(), p)

    def api(self, method, path, q, body):
        d = self.state
        arg = json.loads(self.headers.get("Dropbox-API-Arg") or "null")
        with d.lock:
            if path == "/2/files/upload_session/start":
                sid = f"s{next(d.ids)}"
                d.sessions[sid] = bytearray(body)
                return self.send(200, {"session_id": sid})
            if path in ("/2/files/upload_session/append_v2", "/2/files/upload_session/finish"):
                cur = arg["cursor"]
                data = d.sessions.get(cur["session_id"])
                finish = path.endswith("finish")
                if data is None:
                    return self.conflict("lookup_failed/not_found/.." if finish else "not_found/..")
                if cur["offset"] != len(data):
                    err = {".tag": "incorrect_offset", "correct_offset": len(data)}
                    if finish:
                        return self.send(409, {"error_summary": "lookup_failed/incorrect_offset/..", "error": {".tag": "lookup_failed", "lookup_failed": err}})
                    return self.send(409, {"error_summary": "incorrect_offset/..", "error": err})
                data += body
                lost = self.chunk_answer_lost()
                if not finish:
                    return self.lose_answer() if lost else self.send(200, b"null")
                p = norm(arg["commit"]["path"])
                if d.full:
                    return self.send(409, {"error_summary": "path/insufficient_space/..", "error": {".tag": "path", "reason": {".tag": "insufficient_space"}}})
                del d.sessions[cur["session_id"]]
                self.parents_of(p)
                d.files[p.lower()] = (p, bytes(data))
                return self.lose_answer() if lost else self.send(200, file_meta(p, bytes(data)))
            if path == "/2/files/upload":
                p = norm(arg["path"])
                if len(body) > UPLOAD_MAX:
                    return self.send(413, {"error_summary": "payload_too_large/..", "error": {".tag": "payload_too_large"}})
                if d.full:
                    return self.send(409, {"error_summary": "path/insufficient_space/..", "error": {".tag": "path", "reason": {".tag": "insufficient_space"}}})
                if p.lower() in d.folders:
                    return self.conflict("path/conflict/folder/")
                self.parents_of(p)
                d.files[p.lower()] = (p, body)
                return self.send(200, file_meta(p, body))
            if path == "/2/files/download":
                p = norm(arg["path"]).lower()
                if p not in d.files:
                    return self.conflict("path/not_found/..")
                display, data = d.files[p]
                return self.send_range(data, {"Dropbox-API-Result": json.dumps(file_meta(display, data))})
            req = json.loads(body or b"{}")
            if path == "/2/files/get_metadata":
                p = norm(req["path"]).lower()
                if p in d.files:
                    return self.send(200, file_meta(*d.files[p]))
                if p in d.folders and p:
                    return self.send(200, folder_meta(d.folders[p]))
                return self.conflict("path/not_found/.")
            if path == "/2/files/create_folder_v2":
                p = norm(req["path"])
                if p.lower() in d.folders or p.lower() in d.files:
                    return self.conflict("path/conflict/folder/..")
                self.parents_of(p)
                d.folders[p.lower()] = p
                return self.send(200, {"metadata": folder_meta(p)})
            if path == "/2/files/delete_v2":
                p = norm(req["path"]).lower()
                if p in d.files:
                    display, data = d.files.pop(p)
                    return self.send(200, {"metadata": file_meta(display, data)})
                if p in d.folders and p:
                    display = d.folders.pop(p)
                    for k in [k for k in d.files if k.startswith(p + "/")]:
                        del d.files[k]
                    for k in [k for k in d.folders if k.startswith(p + "/")]:
                        del d.folders[k]
                    return self.send(200, {"metadata": folder_meta(display)})
                return self.conflict("path_lookup/not_found/..")
            if path in ("/2/files/copy_v2", "/2/files/move_v2"):
                src, dst = norm(req["from_path"]).lower(), norm(req["to_path"])
                if src not in d.files:
                    return self.conflict("from_lookup/not_found/..")
                if dst.lower() in d.files:
                    return self.conflict("to/conflict/file/..")
                data = d.files[src][1]
                if path.endswith("move_v2"):
                    del d.files[src]
                self.parents_of(dst)
                d.files[dst.lower()] = (dst, data)
                return self.send(200, {"metadata": file_meta(dst, data)})
            if path == "/2/files/list_folder":
                p = norm(req["path"]).lower()
                if p not in d.folders:
                    return self.conflict("path/not_found/..")
                entries = []
                for k, display in sorted(d.folders.items()):
                    if k and self.under(k, p, req.get("recursive")):
                        entries.append(folder_meta(display))
                for k, (display, data) in sorted(d.files.items()):
                    if self.under(k, p, req.get("recursive")):
                        entries.append(file_meta(display, data))
                return self.page(entries, 0, min(req.get("limit") or 2000, d.page_limit))
            if path == "/2/files/list_folder/continue":
                cur = d.cursors.get(req.get("cursor"))
                if cur is None:
                    return self.conflict("reset/..")
                entries, start, limit = cur
                return self.page(entries, start, limit)
        return self.send(400, {"error_summary": f"fake does not know {method} {path}"})

    @staticmethod
    def under(key, folder, recursive):
        if not key.startswith(folder + "/"):
            return False
        return recursive or "/" not in key[len(folder) + 1 :]

    def page(self, entries, start, limit):
        d = self.state
        chunk = entries[start : start + limit]
        more = start + limit < len(entries)
        cursor = f"c{next(d.ids)}"
        d.cursors[cursor] = (entries, start + limit, limit)
        return self.send(200, {"entries": chunk, "cursor": cursor, "has_more": more})


if __name__ == "__main__":
    fakebase.serve(Handler, Box(), int(sys.argv[1]))
