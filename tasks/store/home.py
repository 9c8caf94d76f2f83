"""REMEDY_HOME kept private: the directory owner-only (0700), every file in it owner-only (0600).

The home holds the case store, the keys, the Prefect server's database and the logs
(docs/security.md, Keys: per-case data keys and rotation). Files Remedy makes itself are created
0600; the processes the local stack starts run with umask 077; a home or file found open to other
users is tightened, with a warning naming only the path.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077

log = logging.getLogger(__name__)


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by its owner only, or tighten one open to others (warned)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & PRIVATE_UMASK:
        path.chmod(PRIVATE_DIR)
        log.warning("%s was open to other users (mode %o); made it %o", path, mode, PRIVATE_DIR)
    return path


def tighten_file(path: Path) -> None:
    """Make an existing file owner-only if others may read it (warned); a missing one is fine."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    if mode & PRIVATE_UMASK:
        path.chmod(PRIVATE_FILE)
        log.warning("%s was open to other users (mode %o); made it %o", path, mode, PRIVATE_FILE)


# secrets that others could read are refused where they are read ("run chmod 600"), not
# quietly tightened: whoever could read them may have copied them
SECRETS = frozenset({"remedy.key", "derive.key", "prefect-api.auth", "audit-signing.key"})


def ensure_home(home: Path) -> Path:
    """Create REMEDY_HOME owner-only, tightening it and the folders and data files in it."""
    ensure_private_dir(home)
    for root, dirs, files in os.walk(home):
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        for name in dirs:
            ensure_private_dir(Path(root) / name)
        if Path(root) == home / "secrets":
            continue
        for name in files:
            if name not in SECRETS:
                tighten_file(Path(root) / name)
    return home


def private_parent(path: Path, home: Path) -> None:
    """Make the folder a file of Remedy's goes in: the home kept private, another one made 0700."""
    parent = path.parent
    if parent.resolve() == home.resolve():
        ensure_home(home)
    elif not parent.exists():
        ensure_private_dir(parent)


def create_private_file(path: Path) -> bool:
    """Create an empty file readable by its owner only; False (tightened) if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        tighten_file(path)
        return False
    os.close(fd)
    return True


def open_private_append(path: Path) -> int:
    """Open a file for appending, created owner-only (a log), and return its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, PRIVATE_FILE)
    tighten_file(path)
    return fd
