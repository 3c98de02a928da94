"""The Modbus client layer's errors: every way a device can fail a request, typed.

Callers (the agent's pollers) decide per type: a timeout or a lost connection makes a reading
stale, an exception response or a garbled answer makes it invalid. Nothing from pymodbus or the
socket layer leaks past the client; the original error is kept as ``__cause__``.
"""

from __future__ import annotations

# Modbus Application Protocol v1.1b3, section 7 (MODBUS Exception Responses).
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ModbusDeviceError(Exception):
    """A request to a device failed; ``device`` names it (e.g. ``tcp:10.0.0.5:502/1``)."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"device={device} {message}")


class ModbusTimeout(ModbusDeviceError):
    """No (complete) answer within the timeout, after every retry."""


class ModbusConnectionError(ModbusDeviceError):
    """The link could not be opened or was lost (connection refused, port missing, reset)."""


class ModbusExceptionResponse(ModbusDeviceError):
    """The device answered with a Modbus exception; ``code`` is the exception code."""

    def __init__(self, device: str, code: int, function_code: int | None = None) -> None:
        self.code = code
        self.function_code = function_code
        self.name = EXCEPTION_NAMES.get(code, "unknown exception")
        fc = f" function={function_code}" if function_code is not None else ""
        super().__init__(device, f"exception={code} ({self.name}){fc}")


class ModbusFrameError(ModbusDeviceError):
    """The device answered something unusable: garbage, bad CRC, wrong length or function."""
