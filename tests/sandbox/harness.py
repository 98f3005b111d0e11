"""Run a command (the real ``edge-agent run``) inside the sandbox of systemd/edge-agent.service.

``UnitHarness(unit, base)`` prepares, under ``base`` on the host, a backing directory for every
path the unit lets the service write or read as its own (StateDirectory=, RuntimeDirectory=,
ConfigurationDirectory=, ReadWritePaths=); the test fills them through ``host_path("/etc/...")``.
``start()`` writes a plan and runs tests/sandbox/launch.py under ``unshare --mount``, which mounts
them on their real paths in a private mount namespace and execs the unit's ExecStart= (its binary
swapped for this venv's ``edge-agent``) as the unit's user, restricted as the unit says.

A throwaway user and group carry the unit's names (an /etc/passwd and /etc/group seen only inside
the namespace), so ``getgrnam("edge-agent")`` resolves there and nowhere else. Nothing is created
on the host outside ``base``, except the ownership of devices handed to the service
(``grant_device``, what a udev rule does for dialout).

To extend: add paths to ``extra_files`` (e.g. a timesyncd flag under /run), call ``in_sandbox``
to run another program in the service's mount namespace as any uid (node_exporter reading the
metrics file), or talk to the control socket at ``host_path("/run/edge-agent/control.sock")``.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.sandbox.unit import UnitError, UnitSandbox

ROOT = Path(__file__).resolve().parents[2]
UNIT_FILE = ROOT / "systemd" / "edge-agent.service"
TMPFILES = ROOT / "systemd" / "edge-agent.tmpfiles"
HIDDEN_HOME = ["/home", "/root", "/run/user"]
PRIVATE_TMP = ["/tmp", "/var/tmp"]
NOTIFY_PATH = "/run/systemd/notify"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ADDRESS_FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_INET": socket.AF_INET,
                    "AF_INET6": socket.AF_INET6, "AF_NETLINK": 16, "AF_PACKET": 17}


def sandbox_unavailable() -> str | None:
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "the unit sandbox harness needs root (mount namespace, setuid)"
    for tool in ("unshare", "nsenter", "setpriv", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, RuntimeError) as exc:
        return f"pyseccomp/libseccomp unavailable: {exc}"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=10, check=False)
    if probe.returncode != 0:
        return f"no mount namespace here: {probe.stderr.strip()}"
    return None


def systemd_is_pid1() -> bool:
    return Path("/run/systemd/system").is_dir()


def tmpfiles_dirs(path: Path) -> dict[str, tuple[int, str, str]]:
    """The directories a tmpfiles.d file creates ('d'/'D' lines): path -> (mode, user, group)."""
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] in ("d", "D"):
            out[f[1]] = (int(f[2], 8), f[3], f[4])
    return out


def _free_id(used: set[int]) -> int:
    for n in range(61_000, 65_000):
        if n not in used:
            return n
    raise RuntimeError("no free uid/gid for the throwaway service user")


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class UnitHarness:
    unit: UnitSandbox
    base: Path
    extra_files: dict[str, bytes | None] = field(default_factory=dict)  # content; None: a dir
    mtimes: dict[str, float] = field(default_factory=dict)  # extra file -> its modification time
    whiteouts: list[str] = field(default_factory=list)  # host files the service must not see
    env: dict[str, str] = field(default_factory=dict)
    # a scratch root laid down by `scripts/install --root`: its /opt/edge-agent is mounted on the
    # real path and ExecStart= runs unchanged; None: ExecStart's binary from this venv instead
    install_root: Path | None = None
    uid: int = 0
    gid: int = 0
    running: Running | None = None
    notify: socket.socket | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        used_uids = {p.pw_uid for p in pwd.getpwall()}
        used_gids = {g.gr_gid for g in grp.getgrall()}
        self.uid = _free_id(used_uids | used_gids)
        self.gid = self.uid
        for path, mode in self.unit.state_dirs + self.unit.runtime_dirs:
            d = self.host_path(path)
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.uid, self.gid)
            d.chmod(mode)
        for path, mode in self.unit.config_dirs:
            d = self.host_path(path)
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, self.gid)  # systemd: root-owned, the service's group
            d.chmod(mode)
        made = tmpfiles_dirs(TMPFILES)
        self.rw_paths: list[str] = []
        for path, optional in self.unit.read_write_paths:
            if path not in made:  # nothing creates it on the box
                if optional:
                    continue  # '-': systemd skips it, and so does the harness
                raise UnitError(f"ReadWritePaths={path}: no directory in {TMPFILES.name} "
                                "creates it, so the unit would fail to start")
            mode, user, group = made[path]
            d = self.host_path(path)
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.uid if user == self.unit.user else pwd.getpwnam(user).pw_uid,
                     self.gid if group == self.unit.group else grp.getgrnam(group).gr_gid)
            d.chmod(mode)
            self.rw_paths.append(path)

    # -- paths -------------------------------------------------------------------------------------

    def host_path(self, unit_path: str) -> Path:
        """Where, on the host, the file the service sees at ``unit_path`` lives."""
        return self.base / "dirs" / unit_path.lstrip("/")

    @property
    def group_ids(self) -> list[int]:
        return [grp.getgrnam(g).gr_gid for g in self.unit.supplementary_groups]

    def grant_device(self, path: str) -> None:
        """Hand a device (a simulator's pty) to the service the way udev hands serial lines to
        dialout: group of the unit's first supplementary group, mode 0660."""
        gid = self.group_ids[0] if self.group_ids else self.gid
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)

    # -- the plan ----------------------------------------------------------------------------------

    def _lower(self, target: str) -> Path:
        top = "/" + target.strip("/").split("/")[0]
        return self.base / "lower" / top.strip("/")

    def _graft(self, target: str, content: bytes | None, mode: int = 0o755) -> str:
        """Make ``target`` exist inside the namespace (through the overlay of its top directory);
        returns that top directory."""
        top = "/" + target.strip("/").split("/")[0]
        p = self._lower(target) / os.path.relpath(target, top)
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
            p.chmod(mode)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            p.chmod(mode)
        return top

    def _passwd_group(self) -> set[str]:
        u, g = self.unit.user, self.unit.group
        home = self.unit.state_dirs[0][0] if self.unit.state_dirs else "/"
        pw = [ln for ln in Path("/etc/passwd").read_text().splitlines()
              if ln.split(":")[0] != u]
        pw.append(f"{u}:x:{self.uid}:{self.gid}:edge-agent (sandbox test):{home}:/usr/sbin/nologin")
        gr = [ln for ln in Path("/etc/group").read_text().splitlines() if ln.split(":")[0] != g]
        gr.append(f"{g}:x:{self.gid}:")
        return {self._graft("/etc/passwd", ("\n".join(pw) + "\n").encode(), 0o644),
                self._graft("/etc/group", ("\n".join(gr) + "\n").encode(), 0o644)}

    def plan(self, argv: list[str]) -> dict[str, object]:
        u = self.unit
        tops: set[str] = self._passwd_group()
        rw_binds, ro_binds = [], []
        for path, _ in u.state_dirs + u.runtime_dirs:
            tops.add(self._graft(path, None))
            rw_binds.append({"source": str(self.host_path(path)), "target": path})
        for path, _ in u.config_dirs:
            tops.add(self._graft(path, None))
            ro_binds.append({"source": str(self.host_path(path)), "target": path})
        for path in self.rw_paths:
            tops.add(self._graft(path, None))
            rw_binds.append({"source": str(self.host_path(path)), "target": path})
        env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "USER": u.user, "LOGNAME": u.user,
               "HOME": u.state_dirs[0][0] if u.state_dirs else "/",
               "SHELL": "/usr/sbin/nologin", "INVOCATION_ID": os.urandom(16).hex()}
        env.update(u.environment)  # Environment=
        for key, dirs in (("STATE_DIRECTORY", u.state_dirs), ("RUNTIME_DIRECTORY", u.runtime_dirs),
                          ("CONFIGURATION_DIRECTORY", u.config_dirs)):
            if dirs:
                env[key] = ":".join(p for p, _ in dirs)
        if u.notify and self.notify is not None:
            tops.add(self._graft(NOTIFY_PATH, b"", 0o644))
            rw_binds.append({"source": self.notify.getsockname(), "target": NOTIFY_PATH})
            env["NOTIFY_SOCKET"] = NOTIFY_PATH
            if u.watchdog_usec:
                env["WATCHDOG_USEC"] = str(u.watchdog_usec)
        if self.install_root is not None:
            prefix = str(Path(u.exec_start[0]).parents[2])  # /opt/edge-agent
            tops.add(self._graft(prefix, None))
            # only there: the tree is made for /opt/edge-agent (scripts/install relocates it), and
            # the scratch root's path stays out of reach (below /tmp, which PrivateTmp= hides),
            # so a tree that names it anywhere fails here as on a box imaged from it
            ro_binds.append({"source": str(self.install_root / prefix.lstrip("/")),
                             "target": prefix})
        cred_dir = "/run/credentials/edge-agent.service"
        if u.credentials:
            tops.add(self._graft(cred_dir, None))
            env["CREDENTIALS_DIRECTORY"] = cred_dir
        for path, content in self.extra_files.items():
            tops.add(self._graft(path, content, 0o755 if content is None else 0o644))
            if path in self.mtimes:
                lower = self._lower(path) / os.path.relpath(path, "/" + path.split("/")[1])
                os.utime(lower, (self.mtimes[path], self.mtimes[path]))
        for path in self.whiteouts:  # an overlay whiteout: a 0:0 character device
            top = "/" + path.strip("/").split("/")[0]
            w = self._lower(path) / os.path.relpath(path, top)
            w.parent.mkdir(parents=True, exist_ok=True)
            if not w.exists():
                os.mknod(w, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
            tops.add(top)
        env.update(self.env)
        hide: list[dict[str, str | int]] = []
        if u.protect_home in ("yes", "read-only", "tmpfs"):
            for h in HIDDEN_HOME:
                if os.path.isdir(h):
                    hide.append({"path": h, "mode": 0o755})
        private_tmp = [t for t in PRIVATE_TMP if u.private_tmp and os.path.isdir(t)]
        hidden = [str(h["path"]) for h in hide] + private_tmp
        # the test host's interpreter and this checkout, wherever the service cannot reach them
        for keep in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                            str(ROOT)}):
            if any(keep == h or keep.startswith(h + "/") for h in hidden):
                ro_binds.append({"source": keep, "target": keep})
        families = None
        if u.restrict_families is not None:
            families = [ADDRESS_FAMILIES[f] for f in u.restrict_families]
        f = u.syscall_filter
        return {
            "overlays": [{"target": t, "lower": str(self.base / "lower" / t.strip("/"))}
                         for t in sorted(tops)],
            "hide": hide,
            "private_tmp": private_tmp,
            "ro_binds": ro_binds,
            "rw_binds": rw_binds,
            "readonly_all": u.protect_system == "strict",
            "sys_readonly": u.protect_kernel_tunables,
            "credentials": {"dir": cred_dir, "files": dict(u.credentials)},
            "proc": {"subset": "subset=pid" if u.proc_subset_pid else "",
                     "hidepid": f"hidepid={u.protect_proc}"
                     if u.protect_proc in ("invisible", "noaccess", "ptraceable") else ""},
            "uid": self.uid, "gid": self.gid, "groups": self.group_ids,
            "umask": u.umask, "no_new_privs": u.no_new_privileges,
            "drop_caps": u.capability_bounding_empty,
            "seccomp": {
                "filter": None if f is None else {"allow_list": f.allow_list, "names": f.names},
                "errno": u.syscall_errno, "implied": u.implied_denials, "families": families,
                "namespaces": u.restrict_namespaces, "realtime": u.restrict_realtime,
                "suid": u.restrict_suid_sgid, "personality": u.lock_personality,
                "mdwe": u.memory_deny_write_execute,
            },
            "env": env,
            "argv": argv,
        }

    def exec_start(self) -> list[str]:
        """The unit's ExecStart= — as is with an installed tree, else its binary swapped for this
        environment's ``edge-agent``."""
        argv = list(self.unit.exec_start)
        if self.install_root is not None:
            if not (self.install_root / argv[0].lstrip("/")).exists():
                raise FileNotFoundError(f"{argv[0]} is not in the installed tree "
                                        f"{self.install_root}")
            return argv
        exe = Path(sys.executable).parent / Path(argv[0]).name
        if not exe.exists():
            raise FileNotFoundError(f"{exe}: ExecStart's {argv[0]} has no counterpart here")
        return [str(exe), *argv[1:]]

    # -- running -----------------------------------------------------------------------------------

    def start(self, argv: list[str] | None = None) -> Running:
        if self.unit.notify and self.notify is None:
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.notify.bind(str(self.base / "notify.sock"))
            os.chmod(self.base / "notify.sock", 0o777)  # as systemd's /run/systemd/notify
        plan_path = self.base / "plan.json"
        plan_path.write_text(json.dumps(self.plan(argv or self.exec_start()), indent=1))
        log = self.base / "service.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
                 "tests.sandbox.launch", str(plan_path)],
                cwd=ROOT, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                env={"PATH": DEFAULT_PATH, "PYTHONDONTWRITEBYTECODE": "1"})
        self.running = Running(proc, log)
        return self.running

    def wait_notify(self, needle: str, timeout: float = 20.0) -> bool:
        assert self.notify is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in n for n in self.notes):
                return True
            exited = self.running is not None and self.running.proc.poll() is not None
            # once the service is gone, only what is already queued can still arrive
            self.notify.settimeout(0.01 if exited else
                                   min(0.5, max(0.01, deadline - time.monotonic())))
            try:
                self.notes.append(self.notify.recv(4096).decode())
            except TimeoutError:
                if exited:
                    break
        return any(needle in n for n in self.notes)

    def in_sandbox(self, argv: list[str], *, uid: int, gid: int,
                   timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the running service's mount namespace as ``uid``/``gid`` (no
        supplementary groups): what another local user (node_exporter) sees of its files."""
        assert self.running is not None
        return subprocess.run(
            ["nsenter", f"--mount=/proc/{self.running.pid}/ns/mnt", "--", "setpriv",
             f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv],
            capture_output=True, text=True, timeout=timeout, check=False)

    def log_text(self) -> str:
        return self.running.log_text() if self.running is not None else ""

    def stop_service(self) -> int:
        """SIGTERM (what ``systemctl stop`` sends first); the exit code."""
        code = self.stop(25)
        return -1 if code is None else code

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM as systemd does (KillMode=mixed: the main process first); the exit code."""
        r = self.running
        if r is None:
            return None
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
            try:
                r.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        return r.proc.returncode

    def close(self) -> None:
        self.stop()
        if self.notify is not None:
            self.notify.close()
            self.notify = None
