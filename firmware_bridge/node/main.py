"""Example node: a water meter built from ``device_map.py`` (water_meter profile).

Wiring (Raspberry Pi Pico): UART0 TX=GP0 RX=GP1 to the RS-485 transceiver, its DE/RE on GP2;
flow sensor pulses (1 litre each) on GP15; tamper switch GP16, leak probe GP17 (both to GND,
pulled up); valve driver GP18; battery divider on ADC0 (GP26). Unit id 7, 9600 baud 8N1.

Every hook returns an engineering value in the profile's units; ``RegisterMap.set`` encodes it.
"""

import time

import device_map
from machine import ADC, UART, WDT, Pin, unique_id
from modbus_slave import RtuSlave, char_bits, timeout_char_ms
from node import Node
from regmap import RegisterMap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

UNIT = 7
BAUD = 9600
LITRES_PER_PULSE = 1


class FlowMeter:
    """Counts flow pulses (interrupt) into a totaliser and a flow rate."""

    def __init__(self, pin: Pin) -> None:
        self.pulses = 0
        self._rate_pulses = 0
        self._rate_ms = time.ticks_ms()
        pin.irq(self._pulse, Pin.IRQ_FALLING)

    def _pulse(self, _pin: Pin) -> None:
        self.pulses += 1

    def total_m3(self) -> float:
        return self.pulses * LITRES_PER_PULSE * 0.001

    def rate_m3h(self) -> float:
        now = time.ticks_ms()
        dt = time.ticks_diff(now, self._rate_ms)
        if dt <= 0:
            return 0.0
        litres = (self.pulses - self._rate_pulses) * LITRES_PER_PULSE
        self._rate_pulses, self._rate_ms = self.pulses, now
        return litres * 3600.0 / dt  # l/ms -> m3/h: * 3600000 / 1000


def battery_percent(adc: ADC) -> int:
    return min(100, adc.read_u16() * 100 // 65535)


def serial_number() -> str:
    return "".join("%02x" % b for b in unique_id())[:12]


def build(uart_id: int = 0, unit: int = UNIT, baud: int = BAUD, wdt_ms: int = 8000) -> Node:
    bits = char_bits(8, None, 1)  # 8N1: 10 bits a character
    uart = UART(uart_id, baudrate=baud, bits=8, parity=None, stop=1, tx=Pin(0), rx=Pin(1),
                timeout=0, timeout_char=timeout_char_ms(baud, bits), rxbuf=1024)
    de = Pin(2, Pin.OUT, value=0)
    regs = RegisterMap(device_map.POINTS, device_map.TABLES, device_map.STRICT)
    node = Node(RtuSlave(uart, unit, regs, baud, de, bits), WDT(timeout=wdt_ms))
    flow = FlowMeter(Pin(15, Pin.IN, Pin.PULL_UP))
    tamper = Pin(16, Pin.IN, Pin.PULL_UP)
    leak = Pin(17, Pin.IN, Pin.PULL_UP)
    valve = Pin(18, Pin.OUT, value=1)
    adc = ADC(26)
    node.sensor("totalizer", flow.total_m3, 1000)
    node.sensor("flow_rate", flow.rate_m3h, 5000)
    node.sensor("battery", lambda: battery_percent(adc), 60000)
    node.sensor("tamper", lambda: tamper.value() == 0, 200)
    node.sensor("leak", lambda: leak.value() == 0, 200)
    node.sensor("reverse_flow", lambda: False, 1000)
    node.sensor("serial_number", serial_number, 3600000)
    regs.set("valve", True)  # the valve starts open, as the driver pin
    node.actuator("valve", lambda v: valve.value(1 if v else 0))
    return node


def main(stop: "Callable[[], bool] | None" = None, **kw: int) -> Node:
    node = build(**kw)
    node.run(stop)
    return node


if __name__ == "__main__":
    main()
