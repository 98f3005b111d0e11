"""Applying a configuration bundle (service/rollout.py's ``RolloutManager.handle``): verify,
admit, stage durably, load as ``check-config`` would, name it in probation and run it in place or
by a controlled restart. Imported when the first bundle arrives, not at start: the daemon does
not hold this code (nor rollout/verify.py's) while no rollout happens (issue #15's memory)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from edge_agent.errors import CommandRefused, CommandStoreError, ConfigError
from edge_agent.rollout.bundle import Bundle, claimed_kid, claimed_version
from edge_agent.rollout.effective import load_bundle_dir
from edge_agent.rollout.facts import uplink_moved
from edge_agent.rollout.results import RolloutResult
from edge_agent.rollout.store import Probation
from edge_agent.rollout.verify import BundleVerifier
from edge_agent.service.commands import load_allowlist
from edge_agent.service.rollout import audit, log

if TYPE_CHECKING:
    from edge_agent.service.rollout import RolloutManager


def _verifier(m: RolloutManager) -> BundleVerifier:
    cfg = m.agent.cfg
    synced = (lambda: True) if cfg.commands_allow_unsynced_clock \
        else (lambda: m.agent.clock.state().synced)
    return BundleVerifier(load_allowlist(cfg.keys.config_keys),
                          load_allowlist(cfg.keys.command_keys), cfg.gateway_id,
                          m.source.local.rollout_tags, clock_synced=synced)


async def handle(m: RolloutManager, message: bytes) -> RolloutResult:
    async with m._lock:
        kid, bundle, detail = b"", None, ""
        try:
            verifier = _verifier(m)
            signed = verifier.authenticate(message)
            kid = signed.kid
            bundle = verifier.decode(signed)
            res = await _admit_and_apply(m, verifier, bundle, kid, message)
        except CommandRefused as exc:
            if not kid:  # refused while authenticating: name the kid the message claims
                kid = claimed_kid(message)
            # the result's kid only where its signature held (a command key's: wrong_role)
            signer = kid if kid and exc.reason not in ("unknown_kid", "bad_signature",
                                                       "malformed", "wrong_alg") else b""
            res = m._result(bundle, signer, "refused", exc.reason, exc.detail)
            if bundle is None:  # correlate by the version the message claims
                res = replace(res, version=claimed_version(message))
            detail = exc.detail
        except Exception as exc:  # a bug must not leave a bundle unanswered
            log.exception("rollout_failed kid=%s", kid.hex() or "-")
            res = m._result(bundle, kid, "refused", "internal_error",
                            f"{type(exc).__name__}: {exc}")
            detail = res.detail
        audit.info("config_audit version=%s kid=%s state=%s reason=%s%s",
                   bundle.version if bundle else "-", kid.hex() or "-", res.state,
                   res.reason or "-", f" detail={detail[:300]!r}" if detail else "")
        m._deliver(res)
        m.refresh_inventory()
        return res


async def _admit_and_apply(m: RolloutManager, verifier: BundleVerifier, b: Bundle, kid: bytes,
                           message: bytes) -> RolloutResult:
    st = m.source.state
    verifier.admit_target(b, pinned=st.pinned is not None,
                          pin_reason=str((st.pinned or {}).get("reason", "")))
    verifier.admit_time(b)
    cur = st.current
    if cur is not None and cur.version == b.version and cur.hash == b.hash.hex():
        if st.probation is not None:
            return m._result(b, kid, "applying", "", "in probation")
        return m._result(b, kid, "unchanged", "", "already running this version")
    if st.probation is not None:
        raise CommandRefused("busy", f"version {st.probation.version} is in probation")
    verifier.admit_version(b, max(st.highest_version, m._floor))
    return await _apply(m, b, kid, message)


async def _apply(m: RolloutManager, b: Bundle, kid: bytes, message: bytes) -> RolloutResult:
    import shutil  # imported here: shutil (with bz2, lzma) is ~0.5 MiB the daemon rarely needs

    src, st = m.source, m.source.state
    try:
        slot = src.store.stage(b, message)
    except CommandStoreError as exc:
        raise CommandRefused("state_unwritable", str(exc)) from None
    where = src.store.path(slot)
    try:
        new = load_bundle_dir(src.local_path, where)
    except ConfigError as exc:
        shutil.rmtree(where, ignore_errors=True)
        text = "\n".join(str(p) for p in exc.problems).replace(f"{where}/", "")
        raise CommandRefused("config_invalid", text) from None
    restart = m.agent.restart_fields(new)
    before = m.snapshot()
    saved = (st.current, st.last_good, st.probation, st.highest_version)
    st.last_good, st.current = st.current, slot
    st.highest_version = b.version
    st.probation = Probation(b.version, 0, before.up, before.down, before.total, b.window_s,
                             b.min_up_ratio, kid.hex(), bool(restart),
                             uplink_moved(m.agent.cfg, new))
    try:
        src.store.save(st)
    except CommandStoreError as exc:
        st.current, st.last_good, st.probation, st.highest_version = saved
        shutil.rmtree(where, ignore_errors=True)
        raise CommandRefused("state_unwritable", str(exc)) from None
    log.info("rollout_applying version=%d restart=%s window_s=%d", b.version,
             ",".join(restart) or "no", b.window_s)
    if restart:
        m.agent.request_restart(f"config version {b.version}")
        return m._result(b, kid, "applying", "", "restart: " + ", ".join(restart))
    if not await m.agent.swap_config(new):  # the old poller did not stop: the daemon restarts
        return m._result(b, kid, "applying", "", "restart: the running poller did not stop")
    src.running = slot
    m._probation_task = m._loop.create_task(m._probation(st.probation))
    return m._result(b, kid, "applying", "", "applied in place")

