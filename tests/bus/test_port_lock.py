"""Bus owners open their serial port exclusively: a second master on one line (a scan or a
direct read while the daemon runs) fails to open with PortBusy instead of corrupting frames."""

from __future__ import annotations

import asyncio
import os
import pty

import pytest

from edge_agent.bus.at import AtClient
from edge_agent.bus.serial_line import SerialRtuBus
from edge_agent.config.model import SerialBus
from edge_agent.errors import BusTimeout, PortBusy
from edge_agent.profiles.model import Table


@pytest.mark.timeout(30)
def test_a_second_owner_of_a_port_is_refused() -> None:
    master, slave = pty.openpty()
    path = os.ttyname(slave)

    async def go() -> None:
        cfg = SerialBus(name="a", port=path, timeout_max_s=0.05, late_answer_window_s=0.0)
        first = SerialRtuBus(cfg)
        second = SerialRtuBus(SerialBus(name="b", port=path, late_answer_window_s=0.0))
        at = AtClient(path, name="c")
        try:
            with pytest.raises(BusTimeout):  # open, nobody answers
                await first.read(1, Table.HOLDING, 0, 1, timeout_s=0.05)
            with pytest.raises(PortBusy, match="in use by another program"):
                await second.read(1, Table.HOLDING, 0, 1, timeout_s=0.05)
            with pytest.raises(PortBusy):
                await at.command("AT", 0.05)
            await first.close()
            third = SerialRtuBus(SerialBus(name="c", port=path, late_answer_window_s=0.0))
            try:
                with pytest.raises(BusTimeout):  # free again: opens
                    await third.read(1, Table.HOLDING, 0, 1, timeout_s=0.05)
            finally:
                await third.close()
        finally:
            await first.close()
            await second.close()
            await at.close()

    try:
        asyncio.run(go())
    finally:
        os.close(master)
        os.close(slave)
