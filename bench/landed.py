#!/usr/bin/env python3
"""landed.py ROOT SIZE READY: waits, without polling, until s3s-fs has put an object of
SIZE bytes in place, and prints the wall clock then (ns since the epoch).

s3s-fs writes every object to ROOT/.tmp.N.internal.part and renames it into place when
it is whole (s3s-fs 0.14 fs.rs, `prepare_file_write`). This watches ROOT with inotify:
each new temp file is opened as it appears, so at its rename (IN_MOVED_FROM) its size
is read through that descriptor. The watcher sleeps in read(2) meanwhile, so it takes
no CPU from the upload it times (polling the store's folder with find every 2 ms
did). READY is created once the watch is armed."""
import ctypes, os, struct, sys, time

IN_CREATE, IN_MOVED_FROM = 0x100, 0x40
root, size, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, root.encode(), IN_CREATE | IN_MOVED_FROM) < 0:
    sys.exit(f"landed.py: cannot watch {root}: {os.strerror(ctypes.get_errno())}")
open(ready, "w").close()
tmp = {}  # temp file name -> a descriptor of it
while True:
    buf = os.read(fd, 65536)
    at = 0
    while at < len(buf):
        _, mask, _, n = struct.unpack_from("iIII", buf, at)
        name = buf[at + 16 : at + 16 + n].rstrip(b"\0").decode()
        at += 16 + n
        if not name.startswith(".tmp."):
            continue
        if mask & IN_CREATE:
            try:
                tmp[name] = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                pass  # already gone: not a whole object's write
        elif mask & IN_MOVED_FROM and name in tmp:
            f = tmp.pop(name)
            if os.fstat(f).st_size == size:
                print(time.time_ns(), flush=True)
                sys.exit(0)
            os.close(f)
