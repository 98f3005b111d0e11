"""The documented exception tree. Every error the agent raises on purpose is one of these.

    EdgeAgentError
    ├── ConfigError            bad profile / agent.toml; carries every Problem (file, key path)
    ├── CodecError             a value cannot be encoded/decoded for a point's type
    │   └── BoundsError        a write outside the profile's min/max/step/allowed values
    ├── PlanError              the planner cannot cover a point in one request (too large for
    │                          the caps) -- a profile problem the engine reports as ConfigError
    ├── BusError               anything that went wrong talking to a device
    │   ├── BusTimeout         no (complete) answer within the timeout
    │   ├── FrameError         garbage, truncated, wrong unit id / function code, echo mismatch
    │   │   └── CrcError       a complete candidate answer failed its CRC
    │   ├── ModbusException    the device answered with an exception code (.code)
    │   ├── GatewayTargetFailed a Modbus gateway answered for a unit behind it that did not
    │   │                      (exception 0x0A / 0x0B, .code): that device is not answering
    │   ├── AtError            an AT module answered ERROR / +CME ERROR (.cme)
    │   └── BusClosed          the bus owner is shut down or the port vanished
    │       ├── PortBusy       another program holds the serial port (exclusive lock)
    │       └── PortDenied     this user may not open the serial port (EACCES/EPERM: a group
    │                          to join, not a wiring fault; .port)
    ├── TrustError             keys, signatures, chain
    │   ├── KeyFileError       missing / unreadable / too-permissive key file
    │   └── VerifyError        a signature, seq or prev-chain check failed; malformed COSE
    │       ├── WrongAlgorithm the protected header names an algorithm other than EdDSA
    │       ├── UnknownKid     no key is known (allowlisted) for the message's kid
    │       └── BadSignature   the signature does not verify under the kid's key
    ├── OutboxError            the durable store cannot accept or return a batch
    │   └── HeadMoved          an append signed from a head that is no longer the head (a
    │                          rechain moved it meanwhile): sign again from the new head
    ├── UplinkError            MQTT session problems that the caller must see
    ├── CommandRefused         a remote/local command was refused (.reason)
    ├── CommandStoreError      the command state (replay guard, durable results) cannot be
    │                          opened, read or written (the SQLite file is broken or unwritable)
    └── ContractError          an internal API used against its documented contract (a Poller
                               run twice, a RetryPolicy with factor < 1): a bug in the caller,
                               never bad input from outside -- bad input is one of the above

Rules (checked by tests/unit/test_exception_tree.py, which walks every ``raise`` in edge_agent/):

* raise only these classes (or a module-private subclass of one of them); never ``ValueError``,
  ``RuntimeError``, ``OSError`` or a library's exception across a module boundary -- translate it
  at the place it happens (``raise BusClosed(...) from exc``);
* callers branch on the class, never on the message text: add a subclass when code needs to tell
  two failures apart (``CrcError`` vs other ``FrameError``; ``WrongAlgorithm`` vs other
  ``VerifyError``);
* exempt: a bare ``raise`` / re-raising the exception an ``except`` clause caught; the few
  protocol-mandated ones listed with their reason in the test's allowlist (``KeyError`` from a
  mapping's ``__getitem__``, ``argparse.ArgumentTypeError`` from an argparse type function).
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


class PlanError(EdgeAgentError):
    """The read planner cannot cover a point (or overlapping points) in one request."""


class BusError(EdgeAgentError):
    pass


class BusTimeout(BusError):
    pass


class FrameError(BusError):
    pass


class CrcError(FrameError):
    """A complete candidate answer (right unit, function code and length) failed its CRC."""


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


class GatewayTargetFailed(BusError):
    """A Modbus gateway answered exception 0x0A (path unavailable) or 0x0B (target failed to
    respond) for the addressed unit: the gateway is alive, the device behind it is not."""

    CODES = (0x0A, 0x0B)

    def __init__(self, code: int, unit: int) -> None:
        self.code = code
        super().__init__(f"gateway: unit {unit} did not respond (modbus exception code {code})")


class AtError(BusError):
    def __init__(self, message: str, cme: int | None = None) -> None:
        self.cme = cme
        super().__init__(message)


class BusClosed(BusError):
    pass


class PortBusy(BusClosed):
    """Another program (the daemon, a scan, mbpoll) holds the serial port: bus owners open their
    port exclusively, so two masters never share one line."""


class PortDenied(BusClosed):
    """The serial port is there but this process may not open it (EACCES/EPERM): the user
    lacks the port's group (dialout), not a wiring fault. ``port``: the device path."""

    def __init__(self, message: str, port: str) -> None:
        self.port = port
        super().__init__(message)


class TrustError(EdgeAgentError):
    pass


class KeyFileError(TrustError):
    pass


class VerifyError(TrustError):
    pass


class WrongAlgorithm(VerifyError):
    """The COSE protected header names an algorithm other than EdDSA (or none)."""


class UnknownKid(VerifyError):
    """No key is known (allowlisted) for the message's kid."""


class BadSignature(VerifyError):
    """The signature does not verify under the key of the message's kid."""


class OutboxError(EdgeAgentError):
    pass


class HeadMoved(OutboxError):
    """An append's first seq does not follow the outbox head: the batches were signed from a
    head that has moved since (outbox/rechain.py re-signed the waiting tail). Nothing was
    committed; the writer signs the same readings again from the current head."""


class UplinkError(EdgeAgentError):
    pass


class CommandRefused(EdgeAgentError):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class CommandStoreError(EdgeAgentError):
    """The command state store (replay guard, durable results) cannot be opened, read or
    written. A command that meets it is refused ``replay_store_unavailable``, still audited."""


class ContractError(EdgeAgentError):
    """An internal API used against its documented contract: a bug in the caller, never bad
    input from outside (that is one of the other classes)."""
