"""A lean simulated Modbus TCP field for the load benchmarks: many endpoints, every answer new.

    python -m benchmarks._mbap_server --endpoints 50 --units 1 [--base-port 0]

Serves ``--endpoints`` listening sockets on loopback (free ports), each with ``--units`` unit ids
(1..units). Function codes 3 and 4 answer any address range (up to 125 registers); every read
of a unit returns registers that all differ from that unit's previous answer (``counter + k``, the
counter advanced by one per read), so report by exception lets every reading of the agent
through and "delivered" equals "polled". Other function codes get exception 1. Pipelined
requests in one segment are all answered.

Why not ``edge-sim`` (pymodbus): at the highest loads the benchmark asks 4,000-9,000 requests/s,
more than pymodbus serves on one core (``benchmarks.sim_district``: ~4,300/s), and on a 2-core
machine the simulator's CPU would starve the agent being measured. This server costs a few µs
per request. The agent cannot tell the difference: the same MBAP frames on the same sockets.

Prints one JSON line ``{"ports": [...], "units": N}`` once listening; runs until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import struct
import sys

_HDR = struct.Struct(">HHHB")


class _Field:
    def __init__(self) -> None:
        self.counters: dict[tuple[int, int], int] = {}  # (endpoint, unit) -> reads so far
        self.requests = 0


class _Proto(asyncio.Protocol):
    def __init__(self, fld: _Field, endpoint: int, units: int) -> None:
        self._fld = fld
        self._ep = endpoint
        self._units = units
        self._buf = b""
        self._tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._tr = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        out = []
        pos = 0
        while len(buf) - pos >= 8:
            tid, _proto, length, unit = _HDR.unpack_from(buf, pos)
            end = pos + 6 + length
            if end > len(buf):
                break
            pdu = buf[pos + 7 : end]
            pos = end
            out.append(self._answer(tid, unit, pdu))
        self._buf = buf[pos:]
        if out and self._tr is not None:
            self._tr.write(b"".join(out))

    def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes:
        fc = pdu[0]
        self._fld.requests += 1
        if fc not in (3, 4) or len(pdu) < 5 or not 1 <= unit <= self._units:
            body = bytes((fc | 0x80, 1 if fc not in (3, 4) else 0x0B))
        else:
            _addr, count = struct.unpack_from(">HH", pdu, 1)
            if not 1 <= count <= 125:
                body = bytes((fc | 0x80, 3))
            else:
                key = (self._ep, unit)
                c = self._fld.counters.get(key, self._ep * 977 + unit * 131) + 1
                self._fld.counters[key] = c
                regs = [(c + k) & 0xFFFF for k in range(count)]
                body = bytes((fc, 2 * count)) + struct.pack(f">{count}H", *regs)
        return _HDR.pack(tid, 0, len(body) + 1, unit) + body


async def serve(endpoints: int, units: int) -> None:
    loop = asyncio.get_running_loop()
    fld = _Field()
    servers = []
    for ep in range(endpoints):
        srv = await loop.create_server(functools.partial(_Proto, fld, ep, units), "127.0.0.1",
                                       0, backlog=64)
        servers.append(srv)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"ports": ports, "units": units}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    for s in servers:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks._mbap_server")
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--units", type=int, default=1)
    args = ap.parse_args()
    asyncio.run(serve(args.endpoints, args.units))


if __name__ == "__main__":
    main()
