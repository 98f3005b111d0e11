"""A sensor node: the RTU slave, the sensor hooks that fill its registers, the watchdog.

``Node.sensor(name, read, period_ms)`` registers a hook: every ``period_ms`` ``read()`` is called
and its engineering value put into the point's registers (the value is kept in ``last``). A hook
that raises marks the point failed - reads covering it get exception 04 - until it succeeds
again. ``Node.actuator(name, apply)`` is called with the new value when the master writes a
writable point. ``step()`` does one round (serve the line, sample what is due, feed the hardware
watchdog); ``run()`` loops it. A hook that hangs stops the feeding, and the watchdog resets the
board.

Log lines are ``event key=value ...`` on the console.
"""

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from machine import WDT
    from modbus_slave import RtuSlave


def log(event: str, detail: str = "") -> None:
    print(event + (" " + detail if detail else ""))


class Node:
    def __init__(self, slave: "RtuSlave", wdt: "WDT | None" = None, idle_us: int = 200) -> None:
        self.slave = slave
        self.map = slave.map
        self.wdt = wdt
        self.idle_us = idle_us
        self.last = {}  # type: dict[str, Any]
        self.failures = 0
        self._sensors = []  # type: list[list[Any]]
        self._actuators = {}  # type: dict[str, Callable[[Any], None]]
        self.map.on_write = self._written

    def sensor(self, name: str, read: "Callable[[], Any]", period_ms: int) -> None:
        self.map.point(name)  # KeyError names the missing point
        if period_ms < 1:
            raise ValueError("sensor %s: period_ms must be >= 1" % name)
        # [name, read, period, next due]
        self._sensors.append([name, read, period_ms, time.ticks_ms()])

    def actuator(self, name: str, apply: "Callable[[Any], None]") -> None:
        p = self.map.point(name)
        if not p[10]:
            raise ValueError("point %s is read-only, it cannot drive an actuator" % name)
        self._actuators[name] = apply

    def sample(self, entry: "list[Any]") -> None:
        name = entry[0]
        try:
            value = entry[1]()
            self.map.set(name, value)
        except Exception as exc:  # a sensor fault must not stop the node
            self.failures += 1
            self.map.fail(name)
            log("sensor_failed", "point=%s err=%r" % (name, exc))
            return
        self.last[name] = value
        if self.map.faulty:
            self.map.ok(name)

    def step(self) -> None:
        slave = self.slave
        if slave.poll():
            return
        now = time.ticks_ms()
        for entry in self._sensors:
            if time.ticks_diff(now, entry[3]) >= 0:
                entry[3] = time.ticks_add(now, entry[2])
                self.sample(entry)
                if slave.uart.any():  # serve the line before the next (slow) sensor
                    break
        if self.wdt is not None:
            self.wdt.feed()
        if not slave.uart.any():
            time.sleep_us(self.idle_us)

    def run(self, stop: "Callable[[], bool] | None" = None) -> None:
        log("node_start", "unit=%d points=%d" % (self.slave.unit, len(self.map.points)))
        while stop is None or not stop():
            self.step()
        log("node_stop", "frames=%d" % self.slave.stats[0])

    def _written(self, name: str, value: "Any") -> None:
        log("point_written", "point=%s value=%r" % (name, value))
        apply = self._actuators.get(name)
        if apply is not None:
            try:
                apply(value)
            except Exception as exc:
                self.failures += 1
                log("actuator_failed", "point=%s err=%r" % (name, exc))
