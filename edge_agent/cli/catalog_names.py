"""The daemon's catalog (op ``catalog``) as the technician commands read it: names and buses.

A device or point name is looked up in what the daemon runs and, when mistyped, refused with the
names it could have been (exit 2, "did you mean"); ``selected`` is what ``tail``'s filters pick,
``report_note`` says when those points are reported so rarely that ``tail`` may stay silent a
while, and ``tcp_of`` names a Modbus TCP device's host:port for failure messages.
"""

from __future__ import annotations

from typing import Any

from edge_agent.cli.common import EXIT_USAGE, CliError, UnknownName


def find_device(cat: dict[str, Any], name: str) -> dict[str, Any]:
    for d in cat["devices"]:
        if d["name"] == name:
            return dict(d)
    raise UnknownName("device", name, [d["name"] for d in cat["devices"]], "edge-agent devices")


def find_point(dev: dict[str, Any], name: str) -> dict[str, Any]:
    for p in dev["points"]:
        if p["name"] == name:
            return dict(p)
    raise UnknownName("point", name, [p["name"] for p in dev["points"]],
                       f"edge-agent read {dev['name']}")


def check_names(cat: dict[str, Any], device: str | None = None, point: str | None = None,
                cls: str | None = None) -> None:
    """CliError (exit 2, with "did you mean") for a name ``cat`` does not know, or for names
    that select nothing together (a device of another class)."""
    if cls and cls not in cat["classes"]:
        raise UnknownName("class", cls, cat["classes"])
    if device:
        dev = find_device(cat, device)
        if cls and dev["class"] != cls:
            raise CliError(f"{device} is a {dev['class']}, not a {cls}: --device and --class "
                           "select nothing together", "drop one of them", EXIT_USAGE,
                           "no_match")
        if point:
            find_point(dev, point)
    elif point:
        scope = [d for d in cat["devices"] if not cls or d["class"] == cls]
        names = {p["name"] for d in scope for p in d["points"]}
        if point not in names:
            raise UnknownName("point", point, names,
                              what=f"of a {cls}" if cls else "")


def selected(cat: dict[str, Any], device: str | None, point: str | None,
             cls: str | None) -> list[tuple[str, dict[str, Any]]]:
    """(device, point info) of every point the filters select."""
    return [(d["name"], p) for d in cat["devices"]
            if (not device or d["name"] == device) and (not cls or d["class"] == cls)
            for p in d["points"] if not point or p["name"] == point]


QUIET_S = 60.0  # a point reported less often than this may keep `tail` silent a while


def report_note(cat: dict[str, Any], device: str | None, point: str | None,
                cls: str | None) -> str:
    """A line saying how rarely the points ``tail`` follows are reported, when a filter
    (device, point or class) selects only points without a heartbeat under QUIET_S (else "").
    Without a filter some point of the street reports often enough."""
    from edge_agent.cli.humanize import duration

    points = selected(cat, device, point, cls) if device or point or cls else []
    reps = [p["report"] for _, p in points if p.get("report")]
    if not points or len(reps) < len(points) or any(
            (r["heartbeat_s"] or float("inf")) < QUIET_S for r in reps):
        return ""
    devices = sorted({d for d, _ in points})
    one_dev = devices[0] if len(devices) == 1 else "DEVICE"
    beats = [r["heartbeat_s"] for r in reps if r["heartbeat_s"]]
    hb = (f"at least every {duration(min(beats))} (heartbeat)" if beats else "no heartbeat")
    if len(points) == 1:
        dev, p = points[0]
        rep = p["report"]
        how = "only when it changes" if rep["on_change"] else "when it moves beyond its deadband"
        return (f"note: {dev}.{p['name']} is polled every {duration(rep['interval_s'])} and "
                f"reported {how}, {hb}: a reading may be a while coming; "
                f"`edge-agent read {dev} {p['name']}` reads it now")
    if point:
        who = f"{point} ({len(devices)} devices)"
        now = f"edge-agent read {one_dev} {point}"
    else:
        who = (f"the {len(points)} points of {devices[0]}" if len(devices) == 1 else
               f"the points of the {len(devices)} {cls or 'selected'} devices")
        now = f"edge-agent read {one_dev}"
    return (f"note: {who} are reported only when they change or move beyond their deadband, "
            f"{hb}: a reading may be a while coming; `{now}` reads them now")


def tcp_of(cat: dict[str, Any], dev: dict[str, Any]) -> str:
    """host:port of the device's bus when it is Modbus TCP, else "" (cli/failure.py)."""
    for b in cat["buses"]:
        if b["name"] == dev["bus"] and "host" in b:
            return f"{b['host']}:{b['port']}"
    return ""
