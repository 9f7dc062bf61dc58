"""A fake of the Google Drive v3 API calls songfs (through OpenDAL) makes, on 127.0.0.1:
files.list with the `q` forms OpenDAL sends (name + parent, parent, parents OR'ed),
files.get (metadata, and alt=media with Range), folder create, multipart upload,
media overwrite, PATCH (trash, move), copy, resumable uploads (start by POST or
PATCH, chunks by PUT with Content-Range, the `bytes */N` status query answered 308 +
Range); and the OAuth endpoints of fakebase.

Like Drive, one folder may hold two files with the same name (two devices that
uploaded the same blob at once); POST /_fake/duplicate {"name": N} makes a second
copy of the newest file called N so tests can check that songfs reads one.

Run: python3 gdrive.py PORT  (prints "LISTENING <port>"; 0 picks a free port).
"""

import email.parser
import itertools
import json
import re
import sys
import time

import fakebase

FOLDER = "application/vnd.google-apps.folder"


class Drive(fakebase.State):
    def __init__(self):
        super().__init__()
        self.files = {}  # id -> dict(name, parents, mimeType, data, trashed, modified)
        self.ids = itertools.count(1)
        self.sessions = {}  # upload_id -> dict(meta, target, size, data)

    def new_id(self):
        return f"f{next(self.ids):06d}"

    def meta(self, fid):
        f = self.files[fid]
        out = {
            "id": fid,
            "name": f["name"],
            "mimeType": f["mimeType"],
            "parents": f["parents"],
            "modifiedTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(f["modified"])),
        }
        if f["mimeType"] != FOLDER:
            out["size"] = str(len(f["data"]))
        return out


# What Drive answers an upload when the user's storage quota is used up.
QUOTA_EXCEEDED = {"error": {"code": 403, "message": "The user's Drive storage quota has been exceeded.", "errors": [{"domain": "usageLimits", "reason": "storageQuotaExceeded", "message": "The user's Drive storage quota has been exceeded."}]}}


def not_found(fid):
    return {"error": {"code": 404, "message": f"File not found: {fid}.", "errors": [{"reason": "notFound"}]}}


class Handler(fakebase.Handler):
    def is_token_path(self, path):
        return path == "/token"

    def is_authorize_path(self, path):
        return path == "/o/oauth2/v2/auth"

    def throttled_body(self):
        return {"error": {"code": 429, "message": "Rate Limit Exceeded", "errors": [{"reason": "rateLimitExceeded"}]}}

    def unauthorized_body(self):
        return {"error": {"code": 401, "message": "Invalid Credentials", "errors": [{"reason": "authError"}]}}

    def fake_control(self, path, body):
        d = self.state
        if path == "/_fake/duplicate":
            name = json.loads(body)["name"]
            with d.lock:
                src = [i for i, f in d.files.items() if f["name"] == name and not f["trashed"]]
                if not src:
                    return self.send(404, {})
                f = dict(d.files[src[-1]])
                fid = d.new_id()
                d.files[fid] = f
                return self.send(200, {"id": fid})
        return self.send(404, {"error": "no such control"})

    def api(self, method, path, q, body):
        d = self.state
        with d.lock:
            if method == "GET" and path == "/drive/v3/files":
                return self.list_files(q)
            m = re.fullmatch(r"/drive/v3/files/([^/]+)", path)
            if m:
                fid = m.group(1)
                if fid not in d.files or d.files[fid]["trashed"]:
                    return self.send(404, not_found(fid))
                if method == "GET" and q.get("alt") == "media":
                    data = d.files[fid]["data"]
                    return self.send_range(data)
                if method == "GET":
                    return self.send(200, d.meta(fid))
                if method == "PATCH":
                    change = json.loads(body or b"{}")
                    f = d.files[fid]
                    if change.get("trashed"):
                        f["trashed"] = True
                    if "name" in change:
                        f["name"] = change["name"]
                    for p in change.get("removeParents", []):
                        if p in f["parents"]:
                            f["parents"].remove(p)
                    f["parents"].extend(change.get("addParents", []))
                    f["modified"] = time.time()
                    return self.send(200, d.meta(fid))
            m = re.fullmatch(r"/drive/v3/files/([^/]+)/copy", path)
            if m and method == "POST":
                src = d.files.get(m.group(1))
                if src is None:
                    return self.send(404, not_found(m.group(1)))
                change = json.loads(body or b"{}")
                fid = d.new_id()
                d.files[fid] = dict(src, name=change.get("name", src["name"]), parents=change.get("parents", list(src["parents"])), modified=time.time())
                return self.send(200, d.meta(fid))
            if method == "POST" and path == "/drive/v3/files":
                spec = json.loads(body)
                fid = d.new_id()
                d.files[fid] = {"name": spec["name"], "parents": spec.get("parents", ["root"]), "mimeType": spec.get("mimeType", "application/octet-stream"), "data": b"", "trashed": False, "modified": time.time()}
                return self.send(200, d.meta(fid))
        if path.startswith("/upload/") and d.full:
            return self.send(403, QUOTA_EXCEEDED)
        if method == "POST" and path == "/upload/drive/v3/files" and q.get("uploadType") == "multipart":
            meta, data = self.multipart(body)
            with d.lock:
                fid = d.new_id()
                d.files[fid] = {"name": meta["name"], "parents": meta.get("parents", ["root"]), "mimeType": "application/octet-stream", "data": data, "trashed": False, "modified": time.time()}
                return self.send(200, d.meta(fid))
        if q.get("uploadType") == "resumable":
            return self.resumable(method, path, q, body)
        m = re.fullmatch(r"/upload/drive/v3/files/([^/]+)", path)
        if m and method == "PATCH" and q.get("uploadType") == "media":
            with d.lock:
                f = d.files.get(m.group(1))
                if f is None or f["trashed"]:
                    return self.send(404, not_found(m.group(1)))
                f["data"] = body
                f["modified"] = time.time()
                return self.send(200, d.meta(m.group(1)))
        return self.send(400, {"error": {"code": 400, "message": f"fake does not know {method} {path}"}})

    def resumable(self, method, path, q, body):
        d = self.state
        m = re.fullmatch(r"/upload/drive/v3/files(?:/([^/]+))?", path)
        if not m:
            return self.send(400, {"error": {"code": 400, "message": "bad resumable path"}})
        with d.lock:
            if method in ("POST", "PATCH"):
                target = m.group(1)
                if target is not None and (target not in d.files or d.files[target]["trashed"]):
                    return self.send(404, not_found(target))
                uid = "u" + d.new_id()
                d.sessions[uid] = {"meta": json.loads(body or b"{}"), "target": target, "size": int(self.headers.get("X-Upload-Content-Length") or -1), "data": bytearray()}
                # Like Drive, the session URI is on the API host.
                return self.send(200, {}, {"Location": f"https://www.googleapis.com/upload/drive/v3/files?uploadType=resumable&upload_id={uid}"})
            s = d.sessions.get(q.get("upload_id"))
            if method != "PUT" or s is None:
                return self.send(404, {"error": {"code": 404, "message": "no such upload session"}})
            rng = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\d+)", self.headers.get("Content-Range", ""))
            if not rng:
                return self.send(400, {"error": {"code": 400, "message": "Content-Range required"}})
            total = int(rng.group(4))
            if rng.group(1) != "*":
                start = int(rng.group(2))
                if start > len(s["data"]) or int(rng.group(3)) - start + 1 != len(body):
                    return self.send(400, {"error": {"code": 400, "message": "chunk does not follow what was received"}})
                del s["data"][start:]
                s["data"] += body
                lost = self.chunk_answer_lost()
            else:
                lost = False
            if len(s["data"]) >= total and "done" not in s:
                fid = s["target"]
                if fid is None:
                    fid = d.new_id()
                    d.files[fid] = {"name": s["meta"]["name"], "parents": s["meta"].get("parents", ["root"]), "mimeType": "application/octet-stream", "data": b"", "trashed": False}
                d.files[fid]["data"] = bytes(s["data"])
                d.files[fid]["modified"] = time.time()
                s["done"] = fid
            if lost:
                return self.lose_answer()
            if "done" in s:
                return self.send(200, d.meta(s["done"]))
            headers = {"Range": f"bytes=0-{len(s['data']) - 1}"} if s["data"] else {}
            return self.send(308, b"", headers)

    def multipart(self, body):
        ctype = self.headers.get("Content-Type", "")
        msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        parts = msg.get_payload()
        meta = json.loads(parts[0].get_payload(decode=True))
        data = parts[1].get_payload(decode=True) or b""
        return meta, data

    def list_files(self, q):
        d = self.state
        query = q.get("q", "")
        parents = re.findall(r"'([^']+)' in parents", query)
        name = re.search(r"name = '((?:[^'\\]|\\.)*)'", query)
        name = name.group(1).replace("\\'", "'") if name else None
        folders_only = FOLDER in query
        hits = [
            fid
            for fid, f in sorted(d.files.items())
            if not f["trashed"]
            and (not parents or any(p in f["parents"] for p in parents))
            and (name is None or f["name"] == name)
            and (not folders_only or f["mimeType"] == FOLDER)
        ]
        if "modifiedTime desc" in q.get("orderBy", ""):
            hits.sort(key=lambda i: d.files[i]["modified"], reverse=True)
        size = int(q.get("pageSize") or 100)
        start = int(q.get("pageToken") or 0)
        page = hits[start : start + size]
        out = {"files": [d.meta(i) for i in page]}
        if start + size < len(hits):
            out["nextPageToken"] = str(start + size)
        return self.send(200, out)


if __name__ == "__main__":
    fakebase.serve(Handler, Drive(), int(sys.argv[1]))
