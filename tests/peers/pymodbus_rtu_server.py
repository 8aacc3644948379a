"""An independent Modbus RTU server (pymodbus) on a serial device, for sealwatch's interoperability
tests. Usage: pymodbus_rtu_server.py TTY (19200 baud, 8N1; a socat pty ignores the line settings).

Serves three units. Units 1 and 2 hold the same holding registers, encoded here with Python's struct
module (independently of sealwatch's decoder):
  0-1  f32 12.75, word order CDAB (low word first)
  2-3  i32 -123456, word order ABCD
  4    u16 4242
Unit 2 answers every request with exception 04 (device failure). Unit 3 holds other values
(f32 -3.5, i32 99, u16 777), so a reply taken for the wrong unit would show. Other units get no
reply, as on a real line. Prints one JSON line with the values once the port is open, then serves
until killed.
"""
import asyncio
import json
import struct
import sys

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

F32 = 12.75
I32 = -123456
U16 = 4242
U16_UNIT3 = 777


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def registers(f32, i32, u16):
    return words("f", f32)[::-1] + words("i", i32) + [u16]


async def refuse(_fc, _start, _address, _count, _registers, _set_values):
    return ExcCodes.DEVICE_FAILURE


def device(unit, values, action=None):
    data = [SimData(address=0, values=values, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=data, action=action)


async def main(tty):
    server = ModbusSerialServer(
        [
            device(1, registers(F32, I32, U16)),
            device(2, registers(F32, I32, U16), refuse),
            device(3, registers(-3.5, 99, U16_UNIT3)),
        ],
        framer=FramerType.RTU,
        port=tty,
        baudrate=19200,
        ignore_missing_devices=True,
    )
    if not await server.listen():
        raise SystemExit(f"pymodbus server could not open {tty}")
    print(
        json.dumps({"f32": F32, "i32": I32, "u16": U16, "u16_unit3": U16_UNIT3}),
        flush=True,
    )
    await asyncio.Event().wait()


asyncio.run(main(sys.argv[1]))
