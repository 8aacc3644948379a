"""An independent Modbus TCP server (pymodbus) for sealwatch's interoperability tests.

Serves three units with the same holding registers, encoded here with Python's struct module
(independently of sealwatch's decoder):
  0-1  f32 12.75, word order CDAB (low word first)
  2-3  i32 -123456, word order ABCD
  4    u16 4242
Unit 1 answers normally, unit 2 answers every request with exception 04 (device failure),
unit 3 answers after 3 s (a slow device). Prints one JSON line with the bound port, then serves
until killed.
"""
import asyncio
import json
import struct

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

F32 = 12.75
I32 = -123456
U16 = 4242


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


REGISTERS = words("f", F32)[::-1] + words("i", I32) + [U16]


async def refuse(_fc, _start, _address, _count, _registers, _set_values):
    return ExcCodes.DEVICE_FAILURE


async def slow(_fc, _start, _address, _count, _registers, _set_values):
    await asyncio.sleep(3)
    return None


def device(unit, action=None):
    data = [SimData(address=0, values=REGISTERS, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=data, action=action)


async def main():
    server = ModbusTcpServer(
        [device(1), device(2, refuse), device(3, slow)], address=("127.0.0.1", 0)
    )
    if not await server.listen():
        raise SystemExit("pymodbus server could not listen")
    port = server.transport.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "f32": F32, "i32": I32, "u16": U16}), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
