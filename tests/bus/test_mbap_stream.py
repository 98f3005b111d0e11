"""The MBAP stream splitter of TcpEndpoint, fed arbitrary chunkings and arbitrary bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bus.tcp_endpoint import MAX_FRAME, TcpEndpoint, _MbapProtocol
from edge_agent.config.model import TcpBus


class Recorder(TcpEndpoint):
    def __init__(self) -> None:
        super().__init__(TcpBus(name="rec", host="127.0.0.1"))
        self.answers: list[tuple[int, int, bytes]] = []
        self.errors: list[str] = []

    def _answer(self, tid: int, unit: int, pdu: bytes) -> None:
        self.answers.append((tid, unit, pdu))

    def _protocol_error(self, why: str) -> None:
        self.errors.append(why)


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes(
        (unit,)
    ) + pdu


def feed(proto: _MbapProtocol, data: bytes) -> None:
    """What asyncio's transport does with a read of ``data``: into the protocol's buffer, as
    much as it offers at a time."""
    while data:
        buf = proto.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        proto.buffer_updated(n)
        data = data[n:]


frames = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(min_size=1, max_size=253)),
    max_size=12,
)


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(frames, st.lists(st.integers(1, 9000), min_size=1, max_size=8))
def test_frames_split_anywhere_come_out_whole_and_in_order(
    items: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    rec = Recorder()
    proto = _MbapProtocol(rec)
    stream = b"".join(mbap(*it) for it in items)
    pos, k = 0, 0
    while pos < len(stream):
        n = cuts[k % len(cuts)]
        feed(proto, stream[pos : pos + n])
        pos, k = pos + n, k + 1
    assert rec.answers == items
    assert rec.errors == []


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    rec = Recorder()
    proto = _MbapProtocol(rec)
    for i in range(0, len(data), 7):
        feed(proto, data[i : i + 7])
    for _tid, _unit, pdu in rec.answers:
        assert 1 <= len(pdu) <= 253
    if rec.errors:
        assert "bad MBAP header" in rec.errors[0]


def test_a_read_of_many_frames_and_a_partial_one_fills_the_buffer_and_loses_nothing() -> None:
    """Reads larger than the protocol's buffer (many answers at once), each ending inside a
    frame: every frame comes out whole, in order, and the buffer never runs out of room."""
    rec = Recorder()
    proto = _MbapProtocol(rec)
    items = [(k, k % 256, bytes([3, 250]) + bytes(range(250))[: 1 + k % 250]) for k in range(300)]
    stream = b"".join(mbap(*it) for it in items)
    for i in range(0, len(stream), 5001):
        feed(proto, stream[i : i + 5001])
    assert rec.answers == items and rec.errors == []
    assert len(proto.get_buffer(-1)) > MAX_FRAME


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(frames, frames, st.lists(st.integers(1, 300), min_size=1, max_size=8))
def test_endpoints_sharing_the_read_buffer_keep_their_partial_frames_apart(
    one: list[tuple[int, int, bytes]], two: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    """Every endpoint of a thread reads into one buffer: reads of two connections, each ending
    inside a frame, alternate, and each connection's frames still come out whole and in order."""
    recs = (Recorder(), Recorder())
    protos = [_MbapProtocol(recs[0]), _MbapProtocol(recs[1])]
    streams = [b"".join(mbap(*it) for it in one), b"".join(mbap(*it) for it in two)]
    pos, k = [0, 0], 0
    while pos[0] < len(streams[0]) or pos[1] < len(streams[1]):
        i = k % 2
        n = cuts[k % len(cuts)]
        feed(protos[i], streams[i][pos[i] : pos[i] + n])
        pos[i] += n
        k += 1
    assert recs[0].answers == one and recs[1].answers == two
    assert recs[0].errors == recs[1].errors == []
