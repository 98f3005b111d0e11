"""Where a gateway keeps its configuration bundles, so that a kill -9 or a power cut at any point
leaves it on the old or the new configuration, never half of each, never none that starts.

    <state_dir>/config/state.json          which bundle runs, which was last good, probation,
                                           the highest version ever admitted, the pin, the last
                                           rollout result -- replaced atomically (temporary
                                           file, fsync, rename, directory fsync)
    <state_dir>/config/bundles/v<N>-<h>/   one materialised bundle (agent.toml, profiles/,
                                           bundle.cose), written under a temporary name, every
                                           file and directory fsynced, then renamed into place

A bundle directory is complete before any state names it, and the state is switched by one
rename: that rename is the commit point of every step (stage, probation, commit, rollback).
Nothing in /etc is ever written (the unit's ProtectSystem=strict leaves only the state directory
writable); the local agent.toml is the configuration of last resort and always stays as it was.

Errors: ``CommandStoreError`` for a state that cannot be written (the caller refuses the bundle,
audited). A state file that cannot be read or parsed is logged and taken as "no bundle" (the
local config runs); the highest version is then recovered from the bundle directories present and,
at the first connection, from the gateway's own retained status (service/rollout.py ``recover``),
and the damaged file is set aside (``state.json.damaged``).
A bundle directory the state does not name (staged, then the daemon died before the state named
it) was never admitted: its version is not passed, and the next start removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.errors import CommandStoreError

if TYPE_CHECKING:
    from edge_agent.rollout.bundle import Bundle

log = logging.getLogger(__name__)

FORMAT = 1
_DIR_RE = re.compile(r"^v(\d+)-[0-9a-f]{16}$")


@dataclass
class Slot:
    """A materialised bundle: its directory name, version, configuration hash (hex)."""

    dir: str
    version: int
    hash: str


@dataclass
class Probation:
    version: int
    starts: int  # daemon starts on this bundle so far (a crash loop is too many of them)
    before_up: int  # devices answering when the change began
    before_down: int  # devices failing then
    before_total: int
    window_s: int
    min_up_ratio: float
    kid: str
    restart: bool  # the change needed a restart
    uplink_moved: bool = False  # [uplink] host, port or topic_prefix changed: prove the new one


@dataclass
class RolloutState:
    current: Slot | None = None  # None: the local agent.toml runs
    last_good: Slot | None = None  # where a failed probation goes back to (None: local)
    probation: Probation | None = None
    highest_version: int = 0  # anti-rollback: a bundle at or below it is refused
    pinned: dict[str, Any] | None = None  # {"at_ms", "by", "reason"}: the local config runs
    last_result: dict[str, Any] | None = None  # {"version", "state", "reason", "t_ms"}
    unreadable: str = field(default="", compare=False)  # why state.json could not be read

    def json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("unreadable")
        return {"format": FORMAT, **d}

    @classmethod
    def from_json(cls, d: Any) -> RolloutState:
        """CommandStoreError (or KeyError, TypeError, ValueError from a damaged document) when
        ``d`` is not a state."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise CommandStoreError("not a rollout state (format 1)")

        def slot(s: Any) -> Slot | None:
            return None if s is None else Slot(str(s["dir"]), int(s["version"]), str(s["hash"]))

        p = d.get("probation")
        return cls(current=slot(d.get("current")), last_good=slot(d.get("last_good")),
                   probation=None if p is None else Probation(**p),
                   highest_version=int(d.get("highest_version", 0)),
                   pinned=d.get("pinned"), last_result=d.get("last_result"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


class BundleStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "config"
        self.bundles = self.root / "bundles"
        self.state_file = self.root / "state.json"

    def path(self, slot: Slot) -> Path:
        return self.bundles / slot.dir

    def load(self) -> RolloutState:
        try:
            raw = self.state_file.read_bytes()
        except FileNotFoundError:  # no bundle was ever admitted (a staged one is not, yet)
            return RolloutState()
        except OSError as exc:
            return self._unreadable(f"cannot read: {exc.strerror or exc}")
        try:
            return RolloutState.from_json(json.loads(raw))
        except (CommandStoreError, ValueError, KeyError, TypeError) as exc:
            return self._unreadable(f"not a valid state: {exc}")

    def _unreadable(self, why: str) -> RolloutState:
        log.error("rollout_state_unreadable path=%s err=%s (the local config runs; the highest "
                  "version comes from the bundle directories and, at connect, the retained "
                  "status)", self.state_file, why)
        return RolloutState(highest_version=self._highest_on_disk(), unreadable=why)

    def set_aside_damaged(self) -> str:
        """Keep an unreadable state.json as state.json.damaged (for a post-mortem) before a new
        one is written; the name it got, "" when there was none to move."""
        dest = self.root / "state.json.damaged"
        try:
            os.replace(self.state_file, dest)
        except OSError:
            return ""
        return str(dest)

    def _highest_on_disk(self) -> int:
        try:
            names = os.listdir(self.bundles)
        except OSError:
            return 0
        return max((int(m.group(1)) for n in names if (m := _DIR_RE.match(n))), default=0)

    def save(self, state: RolloutState) -> None:
        """Replace state.json atomically and durably; CommandStoreError if it cannot."""
        data = json.dumps(state.json(), indent=1, sort_keys=True).encode()
        tmp = self.root / f".state.{os.getpid()}.tmp"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.state_file)
            _fsync_dir(self.root)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise CommandStoreError(f"{self.state_file}: {exc.strerror or exc}") from exc

    def stage(self, bundle: Bundle, signed: bytes) -> Slot:
        """Materialise ``bundle`` durably under its final name (replacing a leftover of the same
        name); the slot to name in the state. CommandStoreError if it cannot be written."""
        import shutil  # imported here: shutil (with bz2, lzma) is ~0.5 MiB the daemon rarely needs

        from edge_agent.rollout.effective import write_tree  # a rollout only, like shutil

        h = bundle.hash.hex()
        slot = Slot(f"v{bundle.version}-{h[:16]}", bundle.version, h)
        final = self.path(slot)
        tmp = self.bundles / f".tmp-{slot.dir}-{os.getpid()}"
        try:
            self.bundles.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            write_tree(tmp, bundle.config, bundle.profiles, signed)
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            _fsync_dir(self.bundles)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CommandStoreError(f"{final}: {exc.strerror or exc}") from exc
        return slot

    def gc(self, state: RolloutState) -> None:
        """Remove bundle directories the state no longer names (and staging leftovers)."""
        keep = {s.dir for s in (state.current, state.last_good) if s is not None}
        try:
            names = os.listdir(self.bundles)
        except OSError:
            return
        for name in names:
            if name not in keep:
                import shutil  # imported here: ~0.5 MiB (bz2, lzma) the daemon rarely needs

                shutil.rmtree(self.bundles / name, ignore_errors=True)
