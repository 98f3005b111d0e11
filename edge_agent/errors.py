"""The documented exception tree. Every error the agent raises on purpose is one of these.

    EdgeAgentError
    ├── ConfigError            bad profile / agent.toml; carries every Problem (file, key path)
    ├── CodecError             a value cannot be encoded/decoded for a point's type
    │   └── BoundsError        a write outside the profile's min/max/step/allowed values
    ├── BusError               anything that went wrong talking to a device
    │   ├── BusTimeout         no (complete) answer within the timeout
    │   ├── FrameError         garbage, bad CRC, truncated, wrong unit id / function code
    │   ├── ModbusException    the device answered with an exception code (.code)
    │   ├── AtError            an AT module answered ERROR / +CME ERROR (.cme)
    │   └── BusClosed          the bus owner is shut down or the port vanished
    ├── TrustError             keys, signatures, chain
    │   ├── KeyFileError       missing / unreadable / too-permissive key file
    │   └── VerifyError        a signature, seq or prev-chain check failed
    ├── OutboxError            the durable store cannot accept or return a batch
    ├── UplinkError            MQTT session problems that the caller must see
    └── CommandRefused         a remote/local command was refused (.reason)
"""

from __future__ import annotations

from dataclasses import dataclass


class EdgeAgentError(Exception):
    """Base of every error raised on purpose by edge-agent."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a config or profile, located precisely."""

    file: str
    path: str  # key path, e.g. "points[3].type"
    message: str
    hint: str = ""  # e.g. "did you mean 'holding'?"

    def __str__(self) -> str:
        where = f"{self.file}: {self.path}" if self.path else self.file
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(EdgeAgentError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CodecError(EdgeAgentError):
    pass


class BoundsError(CodecError):
    pass


class BusError(EdgeAgentError):
    pass


class BusTimeout(BusError):
    pass


class FrameError(BusError):
    pass


class ModbusException(BusError):
    """The device answered with a Modbus exception response."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_DATA_ADDRESS = 2
    ILLEGAL_DATA_VALUE = 3
    DEVICE_FAILURE = 4
    ACKNOWLEDGE = 5
    DEVICE_BUSY = 6

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        super().__init__(message or f"modbus exception code {code}")


class AtError(BusError):
    def __init__(self, message: str, cme: int | None = None) -> None:
        self.cme = cme
        super().__init__(message)


class BusClosed(BusError):
    pass


class TrustError(EdgeAgentError):
    pass


class KeyFileError(TrustError):
    pass


class VerifyError(TrustError):
    pass


class OutboxError(EdgeAgentError):
    pass


class UplinkError(EdgeAgentError):
    pass


class CommandRefused(EdgeAgentError):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
