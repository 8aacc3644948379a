"""An independent Modbus RTU slave (pymodbus) that answers one register late, for sealwatch's
late-reply test. Usage: pymodbus_late_slave.py TTY DELAY_MS (19200 baud, 8N1; a socat pty ignores
the line settings).

Unit 1 holds registers 0..=100, register N holding 1000 + N, so every value names the register it
came from. A read that starts at register 100 is answered only after DELAY_MS, every other read
at once. A master that takes the late answer for its next request stores 1100 where it asked
for another register. Prints one JSON line once the port is open, then serves until killed.
"""
import asyncio
import json
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

REGISTERS = 101
BASE = 1000


LATE_REGISTER = 100


def late_at(delay_s):
    async def action(_fc, _start, address, _count, _registers, _set_values):
        if address == LATE_REGISTER:
            await asyncio.sleep(delay_s)
        return None

    return action


async def main(tty, delay_ms):
    values = [BASE + n for n in range(REGISTERS)]
    slave = SimDevice(
        id=1,
        simdata=[SimData(address=0, values=values, datatype=DataType.REGISTERS)],
        action=late_at(delay_ms / 1000.0),
    )
    server = ModbusSerialServer(
        [slave],
        framer=FramerType.RTU,
        port=tty,
        baudrate=19200,
        ignore_missing_devices=True,
    )
    if not await server.listen():
        raise SystemExit(f"pymodbus server could not open {tty}")
    print(
        json.dumps({"base": BASE, "late_register": LATE_REGISTER, "delay_ms": delay_ms}),
        flush=True,
    )
    await asyncio.Event().wait()


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
