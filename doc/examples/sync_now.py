#!/usr/bin/env python3
"""How Song Factory's "Sync Now" button can drive `songfs sync --json` (doc/SYNC-JSON.md).

A worker thread runs the sync and reads its stream line by line; the UI thread (here:
the main loop) takes progress and the summary from a queue and never blocks on the
sync. Standard library only.

    python3 doc/examples/sync_now.py          # uses `songfs` on the PATH, or $SONGFS_BIN
"""

import json
import os
import queue
import subprocess
import sys
import threading

SCHEMA_VERSION = 1


def sync_worker(events: "queue.Queue[dict]") -> None:
    """Runs one sync; puts every line of its stream on `events`, then None."""
    songfs = os.environ.get("SONGFS_BIN", "songfs")
    try:
        proc = subprocess.Popen(
            [songfs, "sync", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError as e:
        events.put({"type": "error", "message": f"cannot run {songfs}: {e}"})
        events.put(None)
        return
    last = None
    for line in proc.stdout:  # one JSON object per line, as it happens
        event = json.loads(line)
        if event.get("v") != SCHEMA_VERSION:
            event = {"type": "error", "message": f"unknown songfs sync schema {event.get('v')}"}
        last = event
        events.put(event)
    stderr = proc.stderr.read()
    code = proc.wait()
    if last is None or last["type"] == "progress":
        # The process died before its last line: say why (stderr has the reason).
        events.put({"type": "error", "message": stderr.strip() or f"songfs exited with {code}"})
    events.put(None)


def main() -> int:
    events: "queue.Queue[dict]" = queue.Queue()
    threading.Thread(target=sync_worker, args=(events,), daemon=True).start()
    status = 1
    while (event := events.get()) is not None:
        if event["type"] == "progress":
            done, total = event["done"], event["total"]
            counted = f" {done}/{total}" if total else ""
            print(f"syncing: {event['phase']}{counted}", flush=True)
        elif event["type"] == "summary":
            print(f"Synced: {event['message']}", flush=True)
            songs = event["received"].get("songs", {})
            if songs:
                print(f"songs: {songs['updated']} updated, {songs['new']} new", flush=True)
            status = 0 if event["ok"] else 1
        else:
            print(f"Sync failed: {event['message']}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
