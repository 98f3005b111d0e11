"""Strings and the profile-wide ``byte_order``: a string is a run of characters in register
order, so the profile default (a device's word order for numbers, e.g. ``CDAB``) does not apply
to it; only the string point's own ``order`` does. The gateway codec, the simulators (which encode
through the codec) and the node's generated register map all follow the loaded point's order."""

from __future__ import annotations

from pathlib import Path

from edge_agent.profiles.codec import decode, encode
from edge_agent.profiles.load import load_profile
from edge_agent.profiles.model import ModbusPoint, Order
from firmware_bridge import gen

PROFILE = """vendor = "v"
model = "m"
class = "generic"
protocol = "modbus"
byte_order = "CDAB"

[[points]]
name = "total"
table = "input"
address = 0
type = "uint32"

[[points]]
name = "serial"
table = "input"
address = 2
type = "string"
length = 3

[[points]]
name = "tag"
table = "input"
address = 5
type = "string"
length = 2
order = "CDAB"
"""


def _points(tmp_path: Path) -> dict[str, ModbusPoint]:
    path = tmp_path / "p.toml"
    path.write_text(PROFILE)
    return {p.name: p for p in load_profile(path).modbus_points}


def test_profile_byte_order_applies_to_numbers_not_strings(tmp_path: Path) -> None:
    pts = _points(tmp_path)
    assert pts["total"].order is Order.CDAB
    assert pts["serial"].order is Order.ABCD
    assert encode(pts["total"], 0x11223344) == [0x3344, 0x1122]
    assert encode(pts["serial"], "SN1234") == [0x534E, 0x3132, 0x3334]  # "SN" "12" "34"
    assert decode(pts["serial"], [0x534E, 0x3132, 0x3334]) == "SN1234"


def test_a_strings_own_order_is_honoured(tmp_path: Path) -> None:
    tag = _points(tmp_path)["tag"]
    assert tag.order is Order.CDAB
    assert encode(tag, "ABCD") == [0x4344, 0x4142]  # register run reversed
    assert decode(tag, [0x4344, 0x4142]) == "ABCD"


def test_the_node_map_carries_the_same_string_order(tmp_path: Path) -> None:
    pts = _points(tmp_path)
    assert gen.descriptor(pts["serial"])[5] == gen.ORDER_CODES[Order.ABCD]
    assert gen.descriptor(pts["tag"])[5] == gen.ORDER_CODES[Order.CDAB]
    shipped = load_profile(Path(gen.__file__).parents[1] / "device_profiles" / "water_meter.toml")
    serial = next(p for p in shipped.modbus_points if p.name == "serial_number")
    assert shipped.order is Order.CDAB and serial.order is Order.ABCD
