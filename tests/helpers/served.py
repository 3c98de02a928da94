"""One simulated device model served over real Modbus TCP on a free port, with a pymodbus client reading it as
its manual says: the bench's serve-and-write wiring for a single device, for the device models' tests."""

from __future__ import annotations

from typing import Any

from pymodbus.client import AsyncModbusTcpClient

from helpers.net import free_port
from protocols.modbus.registermap import RegisterMap, Table, decode_point
from sim_hw.devices.modbus_server import ModbusDeviceServer


class ServedModel:
    """``async with ServedModel(model, register_map) as rig``: the server routes writes to ``model.on_write``."""

    def __init__(self, model: Any, register_map: RegisterMap, unit: int = 1) -> None:
        self.model, self.register_map, self.unit = model, register_map, unit
        self.server = ModbusDeviceServer.tcp("127.0.0.1", free_port(), {unit: register_map})
        self.client = AsyncModbusTcpClient("127.0.0.1", port=self.server.port, timeout=2, retries=0)

    async def __aenter__(self) -> Any:
        await self.server.start()
        self.server.on_write(self.unit, self.model.on_write)
        assert await self.client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.client.close()
        await self.server.stop()

    async def read(self, name: str) -> Any:
        """Point ``name`` read over the wire with its table's function and decoded as its map says."""
        p = self.register_map.point(name)
        fn = {
            Table.INPUT: self.client.read_input_registers,
            Table.HOLDING: self.client.read_holding_registers,
            Table.DISCRETE: self.client.read_discrete_inputs,
            Table.COIL: self.client.read_coils,
        }[p.table]
        rr = await fn(p.address, count=p.words, device_id=self.unit)
        assert not rr.isError(), rr
        return decode_point(p, rr.bits[: p.words] if p.table.is_bits else rr.registers)

    async def write_words(self, address: int, words: list[int]) -> int:
        """Function 16; the exception code of the answer, 0 when accepted."""
        rr = await self.client.write_registers(address, words, device_id=self.unit)
        return rr.exception_code if rr.isError() else 0
