"""The MBAP stream splitter of TcpEndpoint, fed arbitrary chunkings and arbitrary bytes through
a real socket (a socketpair: the endpoint's read callback, ``recv_into`` the shared buffer)."""

from __future__ import annotations

import select
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.bus.mbap import MAX_FRAME
from edge_agent.bus.tcp_endpoint import TcpEndpoint
from edge_agent.config.model import TcpBus


class Recorder(TcpEndpoint):
    """An endpoint reading from one end of a socketpair; the test writes into the other."""

    def __init__(self) -> None:
        super().__init__(TcpBus(name="rec", host="127.0.0.1"))
        self.answers: list[tuple[int, int, bytes]] = []
        self.errors: list[str] = []
        self._sock, self.peer = socket.socketpair()
        self._sock.setblocking(False)

    def close_now(self) -> None:
        self._shut()
        self.peer.close()

    def _answer(self, tid: int, unit: int, pdu: bytes) -> None:
        self.answers.append((tid, unit, pdu))

    def _protocol_error(self, why: str) -> None:
        self.errors.append(why)


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return tid.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes(
        (unit,)
    ) + pdu


def feed(rec: Recorder, data: bytes) -> None:
    """``data`` arrives: the loop calls the endpoint's reader until it has read all of it."""
    rec.peer.sendall(data)
    sock = rec._sock
    assert sock is not None
    while select.select([sock], [], [], 0)[0]:
        rec._readable()
        assert rec._sock is sock  # (no EOF, no error: still connected)


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
    stream = b"".join(mbap(*it) for it in items)
    pos, k = 0, 0
    try:
        while pos < len(stream):
            n = cuts[k % len(cuts)]
            feed(rec, stream[pos : pos + n])
            pos, k = pos + n, k + 1
    finally:
        rec.close_now()
    assert rec.answers == items
    assert rec.errors == []


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    rec = Recorder()
    try:
        for i in range(0, len(data), 7):
            feed(rec, data[i : i + 7])
    finally:
        rec.close_now()
    for _tid, _unit, pdu in rec.answers:
        assert 1 <= len(pdu) <= 253
    if rec.errors:
        assert "bad MBAP header" in rec.errors[0]


def test_a_read_of_many_frames_and_a_partial_one_fills_the_buffer_and_loses_nothing() -> None:
    """More arrives than the shared buffer holds (many answers at once): reads fill it to the
    brim, each ending inside a frame; every frame comes out whole and in order."""
    rec = Recorder()
    items = [(k, k % 256, bytes([3, 250]) + bytes(range(250))[: 1 + k % 250]) for k in range(300)]
    stream = b"".join(mbap(*it) for it in items)
    try:
        for i in range(0, len(stream), 20001):
            feed(rec, stream[i : i + 20001])
    finally:
        rec.close_now()
    assert rec.answers == items and rec.errors == []
    assert len(rec._rest) < MAX_FRAME


@settings(deadline=None)  # wall-clock deadlines flake on a loaded CI host
@given(frames, frames, st.lists(st.integers(1, 300), min_size=1, max_size=8))
def test_endpoints_sharing_the_read_buffer_keep_their_partial_frames_apart(
    one: list[tuple[int, int, bytes]], two: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    """Every endpoint of a thread reads into one buffer: reads of two connections, each ending
    inside a frame, alternate, and each connection's frames still come out whole and in order."""
    recs = (Recorder(), Recorder())
    streams = [b"".join(mbap(*it) for it in one), b"".join(mbap(*it) for it in two)]
    pos, k = [0, 0], 0
    try:
        while pos[0] < len(streams[0]) or pos[1] < len(streams[1]):
            i = k % 2
            n = cuts[k % len(cuts)]
            if pos[i] < len(streams[i]):
                feed(recs[i], streams[i][pos[i] : pos[i] + n])
            pos[i] += n
            k += 1
    finally:
        recs[0].close_now()
        recs[1].close_now()
    assert recs[0].answers == one and recs[1].answers == two
    assert recs[0].errors == recs[1].errors == []
