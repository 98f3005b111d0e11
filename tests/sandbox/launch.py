"""Enter the unit's sandbox, then exec the service: ``unshare --mount --propagation private
python -m tests.sandbox.launch PLAN.json`` (as root; tests/sandbox/harness.py writes the plan).

In a fresh mount namespace, in this order: open every bind source (before anything hides it); graft
the unit's directories onto the real paths (/etc/edge-agent, /var/lib/edge-agent, /run/edge-agent,
...) with read-only overlays, so nothing is created on the host; hide the home directories
(ProtectHome=) and give a private /tmp (PrivateTmp=); re-expose read-only the few host trees the
test needs (the Python interpreter, when it lives under /root); make every mount read-only
(ProtectSystem=strict, ProtectKernelTunables=); bind the writable paths; place the credentials
(LoadCredential=); mount /proc as ProcSubset=/ProtectProc= say. Then, as systemd's exec does: drop
the capability bounding set, set the groups, gid and uid, the umask, PR_SET_NO_NEW_PRIVS, load the
seccomp filters (libseccomp via pyseccomp) and exec the service with systemd's environment.

Single-threaded on purpose: nothing here runs in a forked child of a threaded test process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
CAP_LAST_CAP = 40

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = [None if x is None else x.encode() for x in (source, target, fstype)]
    if _libc.mount(enc[0], enc[1], enc[2], flags, None if data is None else data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {source} on {target} ({fstype}, {flags:#x}, {data}): "
                         f"{os.strerror(e)}")


def prctl(option: int, arg: int = 0) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl({option}, {arg}): {os.strerror(e)}")


def mounts() -> list[tuple[str, set[str]]]:
    """Mount points (deepest last) with their per-mount options, from /proc/self/mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        point = f[4].encode().decode("unicode_escape")
        out.append((point, set(f[5].split(","))))
    return out


def remount_readonly(point: str, opts: set[str]) -> None:
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    flags |= MS_NOSUID if "nosuid" in opts else 0
    flags |= MS_NODEV if "nodev" in opts else 0
    flags |= MS_NOEXEC if "noexec" in opts else 0
    try:
        mount(None, point, None, flags)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EACCES):  # hidden beneath a later mount
            raise


def under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def bind_fd(fd: int, target: str, *, readonly: bool) -> None:
    src = f"/proc/self/fd/{fd}"
    if not os.path.lexists(target):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).touch()
    mount(src, target, None, MS_BIND | MS_REC)
    # a bind mount copies its source mount's flags: set read-only or writable explicitly
    mount(None, target, None, MS_REMOUNT | MS_BIND | (MS_RDONLY if readonly else 0))


def setup_mounts(plan: dict[str, Any]) -> None:
    # 1. every source, before anything below hides it (pytest's tmp dir lives under /tmp)
    fds = {b["source"]: os.open(b["source"], os.O_PATH)
           for b in plan["ro_binds"] + plan["rw_binds"]}
    creds = {cid: Path(src).read_bytes() for cid, src in plan["credentials"]["files"].items()}
    # 2. the unit's directories on their real paths, through read-only overlays
    for ov in plan["overlays"]:
        mount("overlay", ov["target"], "overlay", MS_RDONLY,
              f"lowerdir={ov['lower']}:{ov['target']}")
    # 3. ProtectHome=, PrivateTmp=
    for h in plan["hide"]:
        mount("tmpfs", h["path"], "tmpfs", MS_NOSUID | MS_NODEV, f"mode={h['mode']:o}")
    for t in plan["private_tmp"]:
        mount("tmpfs", t, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # 4. host trees the test needs back (read-only)
    for b in plan["ro_binds"]:
        bind_fd(fds[b["source"]], b["target"], readonly=True)
    # 5. ProtectSystem=strict: everything read-only but the API file systems and the private tmp
    if plan["readonly_all"]:
        keep = ["/dev", "/proc", "/sys", *plan["private_tmp"]]
        for point, opts in mounts():
            if not under(point, keep):
                remount_readonly(point, opts)
    if plan["sys_readonly"]:  # ProtectKernelTunables=
        for point, opts in mounts():
            if under(point, ["/sys"]):
                remount_readonly(point, opts)
    # 6. the writable paths
    for b in plan["rw_binds"]:
        bind_fd(fds[b["source"]], b["target"], readonly=False)
    # 7. LoadCredential=: a private tmpfs the service user alone reads
    cd = plan["credentials"]["dir"]
    if creds:
        mount("tmpfs", cd, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700")
        for cid, data in creds.items():
            p = os.path.join(cd, cid)
            with open(p, "wb") as f:
                f.write(data)
            os.chmod(p, 0o400)
            os.chown(p, plan["uid"], plan["gid"])
        os.chmod(cd, 0o500)
        os.chown(cd, plan["uid"], plan["gid"])
        mount(None, cd, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # 8. ProcSubset=, ProtectProc=
    proc_opts = [o for o in (plan["proc"]["subset"], plan["proc"]["hidepid"]) if o]
    if proc_opts:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ",".join(proc_opts))
    for fd in fds.values():
        os.close(fd)


def load_seccomp(sc: dict[str, Any]) -> None:
    import pyseccomp as seccomp

    def action(n: int | None) -> int:
        return int(seccomp.KILL_PROCESS if n is None else seccomp.ERRNO(n))

    def rule(f: Any, act: int, name: str, *args: Any) -> bool:
        try:
            f.add_rule(act, name, *args)
            return True
        except (OSError, RuntimeError, ValueError):  # a name this architecture lacks
            return False

    def new(default: int) -> Any:
        return seccomp.SyscallFilter(default)

    filters = []
    # SystemCallFilter= (one filter, as systemd builds it)
    if sc["filter"] is not None:
        if sc["filter"]["allow_list"]:
            f = new(action(sc["errno"]))
            for name in sc["filter"]["names"]:
                rule(f, seccomp.ALLOW, name)
        else:
            f = new(seccomp.ALLOW)
            for name, n in sc["filter"]["names"].items():
                rule(f, action(n if n is not None else sc["errno"]), name)
        filters.append(f)
    # the switches' own filters: always EPERM (systemd's execute.c)
    eperm = seccomp.ERRNO(errno.EPERM)
    g = new(seccomp.ALLOW)
    for names in sc["implied"].values():
        for name in names:
            rule(g, eperm, name)
    if sc["families"] is not None:  # RestrictAddressFamilies= as an allow list
        allowed = sorted(sc["families"])
        lo, hi = allowed[0], allowed[-1]
        nope = seccomp.ERRNO(errno.EAFNOSUPPORT)
        rule(g, nope, "socket", seccomp.Arg(0, seccomp.LT, lo))
        rule(g, nope, "socket", seccomp.Arg(0, seccomp.GT, hi))
        for fam in range(lo + 1, hi):
            if fam not in allowed:
                rule(g, nope, "socket", seccomp.Arg(0, seccomp.EQ, fam))
    if sc["namespaces"]:  # RestrictNamespaces=yes
        for name in ("unshare", "setns"):
            rule(g, eperm, name)
        for bit in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
                    0x40000000, 0x00000080):  # CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET,TIME}
            rule(g, eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, bit, bit))
        rule(g, seccomp.ERRNO(errno.ENOSYS), "clone3")  # flags out of reach: glibc falls back
    if sc["realtime"]:  # RestrictRealtime=: SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
        for policy in (1, 2, 6):
            rule(g, eperm, "sched_setscheduler", seccomp.Arg(1, seccomp.EQ, policy))
    if sc["suid"]:  # RestrictSUIDSGID=
        for bit in (0o4000, 0o2000):
            rule(g, eperm, "chmod", seccomp.Arg(1, seccomp.MASKED_EQ, bit, bit))
            rule(g, eperm, "fchmod", seccomp.Arg(1, seccomp.MASKED_EQ, bit, bit))
            rule(g, eperm, "fchmodat", seccomp.Arg(2, seccomp.MASKED_EQ, bit, bit))
    if sc["personality"]:  # LockPersonality=: only PER_LINUX and the query
        rule(g, eperm, "personality", seccomp.Arg(0, seccomp.GT, 0),
             seccomp.Arg(0, seccomp.LT, 0xFFFFFFFF))
    if sc["mdwe"]:  # MemoryDenyWriteExecute=
        wx = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
        rule(g, eperm, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
        rule(g, eperm, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        rule(g, eperm, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        rule(g, eperm, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))
    # as systemd's exec does: the switches' filter first, SystemCallFilter= last (it may deny the
    # seccomp() call loading any further filter)
    g.load()
    for f in filters:
        f.load()


def drop_privileges(plan: dict[str, Any]) -> None:
    os.chdir("/")
    if plan["drop_caps"]:
        for cap in range(CAP_LAST_CAP + 1):
            try:
                prctl(PR_CAPBSET_DROP, cap)
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # a capability this kernel does not know
                    raise
    os.setgroups(plan["groups"])
    os.setresgid(plan["gid"], plan["gid"], plan["gid"])
    os.setresuid(plan["uid"], plan["uid"], plan["uid"])
    os.umask(plan["umask"])
    if plan["no_new_privs"]:
        prctl(PR_SET_NO_NEW_PRIVS, 1)


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[1]).read_text())
    setup_mounts(plan)
    drop_privileges(plan)
    env = dict(plan["env"])
    if "WATCHDOG_USEC" in env:
        env["WATCHDOG_PID"] = str(os.getpid())  # exec keeps the pid: the service is the main pid
    sys.stdout.flush()
    load_seccomp(plan["seccomp"])
    os.execve(plan["argv"][0], plan["argv"], env)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
