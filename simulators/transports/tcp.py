"""Modbus TCP endpoints for simulated devices, on pymodbus' server side.

One ``TcpEndpoint`` listens on one port and serves one or more devices by unit id: a device with its
own server (unit id usually 1) or a gateway with several units behind one address. pymodbus does the
MBAP framing and the PDUs; this module supplies:

* a datastore object that routes ``async_getValues``/``async_setValues`` to the SimDevice of the
  addressed unit (``ProfileDevice.read``/``write``, whose ModbusException becomes an exception
  response); unknown units answer 0x0B "gateway target failed to respond";
* a request handler that keeps the request it answers (pymodbus' stock handler reads the shared
  ``last_pdu`` after awaiting, which answers pipelined requests with the wrong transaction id once
  an answer is late), and applies the per-request faults: DEAD (no answer), SLOW (late answer);
* endpoint faults at the asyncio level, which pymodbus cannot express: REFUSE closes the listener
  (and its connections), RESET aborts connections with a TCP RST on their next request, STALL reads
  and never answers. Setting NONE re-opens the listener on the same port.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import SimData
from pymodbus.simulator import SimDevice as PmSimDevice

from edge_agent.errors import ModbusException
from edge_agent.profiles.model import Table

from ..devices.base import SimDevice
from ..faults import DeviceFault, EndpointFault

log = logging.getLogger(__name__)

_FC_TABLE: dict[int, Table] = {1: Table.COIL, 5: Table.COIL, 15: Table.COIL, 2: Table.DISCRETE,
                               3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING,
                               23: Table.HOLDING, 4: Table.INPUT}


def _exc_code(code: int) -> ExcCodes:
    try:
        return ExcCodes(code)
    except ValueError:
        return ExcCodes.DEVICE_FAILURE


class DeviceStore:
    """What pymodbus' PDUs call as their datastore: unit id -> SimDevice."""

    def __init__(self, devices: Sequence[SimDevice]) -> None:
        self.units: dict[int, SimDevice] = {}
        for d in devices:
            if d.unit_id in self.units:
                raise ValueError(f"unit id {d.unit_id} used twice ({self.units[d.unit_id].name}, "
                                 f"{d.name})")
            self.units[d.unit_id] = d

    def device_ids(self) -> list[int]:
        return list(self.units)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        dev = self.units.get(device_id)
        if dev is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            regs = dev.read(table, address, count)
        except ModbusException as exc:
            return _exc_code(exc.code)
        return [bool(r) for r in regs] if table.is_bits else regs

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        dev = self.units.get(device_id)
        if dev is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            dev.write(table, address, [int(v) for v in values])
        except ModbusException as exc:
            return _exc_code(exc.code)
        return None


class _Handler(ServerRequestHandler):
    """One client connection: answers each request it parsed, applying the faults."""

    def __init__(self, owner: _Server) -> None:
        super().__init__(owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect)  # type: ignore[no-untyped-call]
        self.owner = owner

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        if self.owner.endpoint.fault is EndpointFault.RESET:
            self.reset()
            return len(data)
        try:
            used = self.framer_callback(data, addr)
        except ModbusIOException as exc:
            resp = ExceptionResponse(0 if exc.fcode is None else exc.fcode,
                                     exception_code=ExcCodes.ILLEGAL_FUNCTION,
                                     device_id=exc.dev_id, transaction=exc.transaction_id)
            self.pdu_send(resp, addr)
            return len(data)
        pdu, self.last_pdu = self.last_pdu, None
        if pdu is not None:
            task = self.loop.create_task(self.answer(pdu, addr))
            self.owner.tasks.add(task)
            task.add_done_callback(self.owner.tasks.discard)
        return used

    def framer_callback(self, data: bytes, addr: tuple[Any, ...] | None) -> int:
        # TransactionManager.callback_data: frame parsing only (sets self.last_pdu)
        return super(ServerRequestHandler, self).callback_data(data, addr)

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing device would."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        cast(asyncio.Transport, transport).abort()

    async def answer(self, pdu: ModbusPDU, addr: tuple[Any, ...] | None) -> None:
        endpoint = self.owner.endpoint
        if endpoint.fault is EndpointFault.STALL:
            return
        dev = endpoint.store.units.get(pdu.dev_id)
        if dev is not None:
            kind = dev.faults.kind
            if kind is DeviceFault.DEAD:
                return
            if kind is DeviceFault.SLOW:
                await asyncio.sleep(dev.faults.slow_s)
        try:
            response = await pdu.datastore_update(cast(ModbusServerContext, endpoint.store),
                                                  pdu.dev_id)
        except Exception as exc:  # a bug in a model must not kill the connection
            log.exception("sim_request_failed endpoint=%s unit=%s err=%s", endpoint.name,
                          pdu.dev_id, exc)
            response = ExceptionResponse(pdu.function_code, ExcCodes.DEVICE_FAILURE)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if self.transport is not None and endpoint.answering():
            self.pdu_send(response, addr)  # unless the endpoint stalled meanwhile


class _Server(ModbusTcpServer):
    def __init__(self, endpoint: TcpEndpoint) -> None:
        placeholder = PmSimDevice(0, simdata=SimData(0))  # unused: DeviceStore answers
        super().__init__(placeholder, address=(endpoint.host, endpoint.port))
        self.endpoint = endpoint
        self.tasks: set[asyncio.Task[None]] = set()

    def callback_new_connection(self) -> _Handler:
        return _Handler(self)

    def connections(self) -> list[_Handler]:
        return [c for c in self.active_connections.values() if isinstance(c, _Handler)]


class TcpEndpoint:
    """A listening Modbus TCP address serving ``devices`` by unit id. Use inside a running loop."""

    def __init__(self, name: str, devices: Sequence[SimDevice], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.store = DeviceStore(devices)
        self.fault = EndpointFault.NONE
        self._server: _Server | None = None

    def answering(self) -> bool:
        return self.fault is not EndpointFault.STALL

    @property
    def devices(self) -> list[SimDevice]:
        return list(self.store.units.values())

    async def start(self) -> int:
        """Listen; returns the port (a free one when constructed with port 0)."""
        server = _Server(self)
        if not await server.listen():
            raise OSError(f"sim endpoint {self.name}: cannot listen on {self.host}:{self.port}")
        sockets = cast(asyncio.Server, server.transport).sockets
        self.port = int(sockets[0].getsockname()[1])
        # re-listening after REFUSE must come back on the same port
        server.call_create = partial(server.loop.create_server, server.handle_new_connection,
                                     self.host, self.port, reuse_address=True, start_serving=True)
        self._server = server
        log.debug("sim_endpoint_listening endpoint=%s port=%d units=%s", self.name, self.port,
                  sorted(self.store.units))
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for task in list(server.tasks):
            task.cancel()
        await server.shutdown()  # type: ignore[no-untyped-call]
        if server.tasks:
            await asyncio.gather(*server.tasks, return_exceptions=True)

    async def set_fault(self, kind: EndpointFault) -> None:
        server = self._server
        if server is None:
            raise RuntimeError(f"sim endpoint {self.name} is not started")
        previous, self.fault = self.fault, kind
        log.info("sim_endpoint_fault endpoint=%s fault=%s", self.name, kind.value)
        if kind is EndpointFault.REFUSE and previous is not EndpointFault.REFUSE:
            server.close()  # listener and its connections
        elif (kind is not EndpointFault.REFUSE and previous is EndpointFault.REFUSE
              and not await server.listen()):
                raise OSError(f"sim endpoint {self.name}: cannot re-listen on port {self.port}")

    def drop_connections(self) -> None:
        """Reset every open connection (a device reboot)."""
        if self._server is not None:
            for conn in self._server.connections():
                conn.reset()

    @property
    def connection_count(self) -> int:
        return len(self._server.connections()) if self._server is not None else 0
