"""The permissions a new file or directory gets from the user's umask.

``tempfile.mkstemp`` and ``mkdtemp`` create owner-only entries (0600,
0700) whatever the umask; a port written through them and renamed into
place would be unreadable to anyone else (a teammate, a container user, a
web server).  The writers chmod their temporary files to these modes
before the rename, so an output gets the modes ``open()`` and ``mkdir()``
would give it.
"""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()


def umask() -> int:
    """The process's umask, read without changing it where the OS allows
    (``/proc/self/status``, Linux 4.7+); elsewhere set and restored at
    once, under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """``0o666`` less the umask: what ``open(path, "w")`` gives."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """``0o777`` less the umask: what ``os.mkdir`` gives."""
    return 0o777 & ~umask()
