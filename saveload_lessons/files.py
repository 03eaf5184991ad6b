"""Writing a file so that a crash never leaves half of it: ``atomic_write``.

The lessons' checkpoints, the data set's files and the ``latest`` pointer of
distributed checkpoints are all written through it.
"""

import contextlib
import os
import stat
import tempfile
from pathlib import Path

# The temporary file is named ".{name}.XXXXXXXX.part" after the file it replaces. A file name
# has at most 255 bytes, and a character up to 4 in UTF-8, so only the first 60 characters of
# the name are used: ".", 240 bytes, ".", 8 random characters and ".part" fit.
TEMPORARY_NAME_CHARACTERS = 60


@contextlib.contextmanager
def atomic_write(path):
    """Write a file so that ``path`` holds either its old content or the complete new one.

    Yields a binary file opened on a temporary file in the same folder. When
    the block ends without error, the data is flushed to disk and the
    temporary file replaces ``path`` in a single rename. If the block raises,
    ``path`` is untouched and the temporary file is removed; if the process is
    killed, ``path`` is untouched too (a hidden ``.part`` file may remain).

    A symbolic link is followed, as ``open(path, "w")`` would: the file it
    points to is replaced (the temporary file is made in that file's folder)
    and the link stays a link to it.

    The new file keeps the read and write permissions and the group of the
    file it replaces, so a private checkpoint stays private (execute, setuid,
    setgid and sticky bits are dropped: a checkpoint is data; where the group
    cannot be kept, the group's permissions are dropped); a file that did not
    exist gets the usual permissions for new files (0666 less the umask).

    Raises ``PermissionError``, naming the folder, when this user may not
    create files there.
    """
    target = Path(os.path.realpath(path))
    try:
        mode, group = _replacement_mode(target)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".part",
                                        prefix=f".{target.name[:TEMPORARY_NAME_CHARACTERS]}.")
    except PermissionError as err:
        raise PermissionError(
            err.errno, f"cannot save {path}: this user may not create files in the folder "
            f"{target.parent} (saving needs write and search permission on it, and search "
            "permission on the folders above it). Save it somewhere else, or ask the folder's "
            "owner for access") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with open(tmp, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        tmp.chmod(_with_group(tmp, mode, group))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def _replacement_mode(target):
    """The permission bits and the group for a new file at ``target``: the read and write bits
    and the group of the file there now, or 0666 less the umask and no group to keep."""
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return 0o666 & ~_umask(), None
    return stat.S_IMODE(status.st_mode) & 0o666, status.st_gid


def _with_group(tmp, mode, group):
    """``mode`` for ``tmp``, after giving it the replaced file's ``group``; if the group cannot
    be kept, its read and write bits are dropped, so that another group never gains them."""
    if group is None or os.stat(tmp).st_gid == group:
        return mode
    try:
        os.chown(tmp, -1, group)
        return mode
    except (OSError, AttributeError):  # not a member of that group; no chown on Windows
        return mode & ~0o070


def _sync_folder(folder):
    """Make a rename in ``folder`` durable, where the system allows it. Windows cannot open a
    folder (nor needs to); elsewhere a failure is harmless, the file's data being on disk."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _umask():
    """The process's umask (reading it means setting it, so it is set straight back)."""
    current = os.umask(0o022)
    os.umask(current)
    return current
