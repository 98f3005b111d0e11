"""`edge-agent buffer export DEST`: the CLI side of the export.

The daemon only streams its batches over the control socket (``service/export.py``); this
process, with the technician's own rights, writes ONE archive file (``trust/archive.py``):

- DEST is an existing directory (the file is named ``<gateway>-<UTC time>.export.cbor`` in it)
  or the name of a new file in an existing directory; an existing file is never overwritten;
- the data goes to a temporary file created with O_CREAT|O_EXCL|O_NOFOLLOW next to the target
  (so a planted link is neither followed nor overwritten), is flushed and fsynced, then renamed
  with RENAME_NOREPLACE (or link + unlink where that is unavailable) and the directory is fsynced;
- anything that goes wrong (full stick, daemon gone, Ctrl-C) removes the temporary file: the
  destination either holds the complete archive or nothing.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import errno
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_agent.control.client import ControlClient, ControlUnavailable
from edge_agent.errors import EdgeAgentError
from edge_agent.trust.archive import SUFFIX, ArchiveError, ArchiveWriter, Header

LINE_TIMEOUT_S = 60.0  # the daemon sends a page at a time; a minute of silence means it hung
RENAME_NOREPLACE = 1
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class ExportError(EdgeAgentError):
    """The archive could not be written (destination exists, no space, I/O error...)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    gateway: str
    batches: int
    readings: int
    bytes: int
    first_seq: int | None
    last_seq: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "gateway": self.gateway, "batches": self.batches,
                "readings": self.readings, "bytes": self.bytes, "first_seq": self.first_seq,
                "last_seq": self.last_seq}


def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def rename_noreplace(dir_fd: int, old: str, new: str) -> None:
    """Rename ``old`` to ``new`` inside ``dir_fd``, refusing (ExportError) when ``new`` exists,
    a link included: renameat2(RENAME_NOREPLACE), else link + unlink (where the filesystem has
    no RENAME_NOREPLACE; link refuses an existing name too)."""
    fn = _renameat2()
    err = errno.ENOSYS
    if fn is not None:
        if fn(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        try:
            os.link(old, new, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            err = exc.errno or errno.EIO
        else:
            os.unlink(old, dir_fd=dir_fd)
            return
    if err == errno.EEXIST:
        raise ExportError(f"{new}: exists; not overwritten")
    raise ExportError(f"{new}: cannot rename the finished archive into place: "
                      f"{os.strerror(err)}")


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


class NewFile:
    """A file that appears under ``name`` in ``directory`` complete or not at all."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory, self.name = directory, name
        self.path = directory / name
        self._tmp = f".{name}.{os.getpid()}.tmp"
        self._dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _lexists(name, self._dfd):
                raise ExportError(f"{self.path}: exists; not overwritten")
            try:
                fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=self._dfd)
            except FileExistsError:
                raise ExportError(f"{directory / self._tmp}: exists (planted?); not "
                                  "followed, not overwritten") from None
            except OSError as exc:  # named by the directory chosen, not the temporary name
                raise ExportError(f"{directory}: cannot create {name} there: "
                                  f"{exc.strerror or exc}") from None
        except BaseException:
            os.close(self._dfd)
            raise
        self.file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._done = False

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        rename_noreplace(self._dfd, self._tmp, self.name)
        self._done = True
        try:
            os.fsync(self._dfd)
        except OSError as exc:  # some filesystems cannot fsync a directory
            if exc.errno not in (errno.EINVAL, errno.EROFS):
                raise

    def __enter__(self) -> NewFile:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self.file.closed:
            try:
                self.file.close()
            except OSError:
                pass  # the write error that brought us here is the one to report
        if not self._done:
            try:
                os.unlink(self._tmp, dir_fd=self._dfd)
            except OSError:
                pass
        os.close(self._dfd)


def destination(dest: Path, gateway: str, now: float | None = None) -> tuple[Path, str]:
    """(directory, file name) for DEST: inside it when it is a directory, else DEST itself."""
    if dest.is_dir():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        return dest, f"{_SAFE.sub('_', gateway) or 'gateway'}-{stamp}{SUFFIX}"
    parent = dest.parent
    if not parent.is_dir():
        raise ExportError(f"{parent}: no such directory (is the stick mounted?)")
    if os.path.lexists(dest):
        raise ExportError(f"{dest}: exists; not overwritten (name a new file or a directory)")
    return parent, dest.name


def check_room(directory: Path, need: int) -> None:
    """ExportError unless ``directory`` can take a file of ``need`` bytes: on a filesystem that
    stores files (not /proc or /sys), mounted read-write, with the space (a directory this user
    may not write to is named when the file cannot be created)."""
    from edge_agent.cli.humanize import size

    st = os.statvfs(directory)
    writable = os.access(directory, os.W_OK | os.X_OK)
    if st.f_blocks == 0 and not writable:
        raise ExportError(f"{directory}: not a filesystem for files (no blocks at all: /proc, "
                          "/sys or another pseudo filesystem?); give the stick's mount point, "
                          "e.g. /mnt/usb")
    if st.f_flag & os.ST_RDONLY:
        raise ExportError(f"{directory}: mounted read-only; remount it read-write (or is the "
                          "stick's write-protect switch on?)")
    free = st.f_bavail * st.f_frsize
    if st.f_blocks and free < need:  # a filesystem with no block counts says nothing of room
        raise ExportError(f"{directory}: {size(free)} free, the export needs about "
                          f"{size(need)}")


def export_to(socket_path: Path, dest: Path) -> ExportResult:
    with ControlClient(socket_path, timeout_s=10.0) as client:
        stream = client.stream("export", timeout_s=LINE_TIMEOUT_S)
        head = next(stream)
        gateway = head.get("gateway_id")
        if not isinstance(gateway, str) or not gateway:
            raise ControlUnavailable(f"export: the daemon's first line has no gateway: {head}")
        directory, name = destination(dest, gateway)
        check_room(directory, int(head.get("bytes", 0)) + 9 * int(head.get("depth", 0)) + 4096)
        try:
            with NewFile(directory, name) as out:
                writer = ArchiveWriter(out.file, Header(
                    gateway=gateway, head_seq=int(head.get("head_seq", 0)),
                    agent_version=str(head.get("agent_version", "")), created_ns=time.time_ns()))
                end = _copy(stream, writer)
                t = writer.finish()
                if (end.get("batches"), end.get("bytes")) != (t.batches, t.nbytes):
                    raise ExportError(f"export: the daemon reports {end} but sent "
                                      f"{t.batches} batches / {t.nbytes} bytes")
                out.commit()
        except TimeoutError:
            raise
        except ConnectionError as exc:
            raise ControlUnavailable(f"the daemon closed the connection during the export "
                                     f"({exc.strerror or exc}); nothing was written") from None
        except OSError as exc:  # the destination, never the temporary file's name
            raise ExportError(f"{directory / name}: {exc.strerror or exc}; nothing was "
                              "written") from None
        except ArchiveError as exc:
            raise ExportError(f"export: {exc}") from None
    return ExportResult(directory / name, gateway, t.batches, t.readings, t.nbytes, t.first_seq,
                        t.last_seq)


def _copy(stream: Any, writer: ArchiveWriter) -> dict[str, Any]:
    """Batches from the stream into the archive; the stream's end summary."""
    for msg in stream:
        batch = msg.get("batch")
        if isinstance(batch, dict):
            try:
                cose = base64.b64decode(batch["cose"], validate=True)
                seq, readings = int(batch["seq"]), int(batch.get("readings", 0))
            except (KeyError, TypeError, ValueError) as exc:
                raise ControlUnavailable(f"export: malformed batch line from the daemon: "
                                         f"{exc}") from None
            writer.add(cose, seq=seq, readings=readings)
            continue
        end = msg.get("end")
        if isinstance(end, dict):
            return end
        raise ControlUnavailable(f"export: unexpected line from the daemon: {str(msg)[:200]}")
    raise ControlUnavailable("export: the stream ended without its end line")
