"""poll.gate.Gate: asyncio.Semaphore's first-come first-served semantics in two slots."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.errors import ContractError
from edge_agent.poll.gate import Gate


async def _holder(gate: Gate, name: str, order: list[str], hold: asyncio.Event) -> None:
    async with gate:
        order.append(name)
        await hold.wait()


def test_waiters_get_the_slot_in_arrival_order_and_a_newcomer_does_not_barge() -> None:
    async def main() -> list[str]:
        gate, go = Gate(), asyncio.Event()
        order: list[str] = []
        go.set()
        await gate.acquire()
        assert gate.locked()
        tasks = [asyncio.create_task(_holder(gate, n, order, go)) for n in "abc"]
        await asyncio.sleep(0)
        gate.release()  # handed to "a" ...
        late = asyncio.create_task(_holder(gate, "late", order, go))  # ... not to a newcomer
        await asyncio.gather(*tasks, late)
        assert not gate.locked() and gate._waiters is None  # the list only while someone waits
        return order

    assert asyncio.run(main()) == ["a", "b", "c", "late"]


def test_a_cancelled_waiter_is_skipped_and_one_cancelled_after_the_handover_passes_it_on() -> None:
    async def main() -> list[str]:
        gate, go = Gate(), asyncio.Event()
        order: list[str] = []
        go.set()
        await gate.acquire()
        a, b, c = (asyncio.create_task(_holder(gate, n, order, go)) for n in "abc")
        await asyncio.sleep(0)
        a.cancel()  # waiting: skipped
        await asyncio.sleep(0)
        gate.release()  # handed to b ...
        b.cancel()  # ... which is cancelled before it runs: c gets the slot
        await asyncio.gather(a, b, c, return_exceptions=True)
        assert a.cancelled() and b.cancelled()
        assert not gate.locked()
        return order

    assert asyncio.run(main()) == ["c"]


def test_slots_holders_at_once() -> None:
    async def main() -> tuple[list[str], bool]:
        gate, hold = Gate(2), asyncio.Event()
        order: list[str] = []
        tasks = [asyncio.create_task(_holder(gate, n, order, hold)) for n in "abc"]
        await asyncio.sleep(0.01)
        two = list(order)
        hold.set()
        await asyncio.gather(*tasks)
        return two, gate.locked()

    two, locked = asyncio.run(main())
    assert two == ["a", "b"] and not locked


def test_a_gate_is_small() -> None:
    assert not hasattr(Gate(), "__dict__")
    with pytest.raises(ContractError):
        Gate(-1)
