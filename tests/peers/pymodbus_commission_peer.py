"""An independent Modbus peer (pymodbus) for sealwatch's commissioning tests.

Usage: pymodbus_commission_peer.py tcp UNIT...
       pymodbus_commission_peer.py rtu PORT UNIT...

Serves the given unit ids, each with holding registers 0-9 = 100+unit*10+i and a device
identification (vendor "pymodbus-peer", product code "PEER", revision "3.16"). Other unit ids
get exception 0B (gateway target failed to respond) over TCP and no answer at all on RTU. Nothing
else is defined: coils, discrete inputs and input registers answer exception 02, so a seal-node
profile does not fit these devices. Prints one JSON line when serving ({"port": N} for TCP,
{"ready": true} for RTU), then serves until killed.
"""
import asyncio
import json
import sys

from pymodbus import FramerType
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice, simcore


def _get_device(self, device_id):
    # pymodbus 3.16's SimCore falls back to device 0 and, without one, fails with a KeyError that
    # the server answers as exception 04: report an unknown unit the way the server expects.
    if device_id not in self.devices:
        raise NoSuchIdException(f"no device {device_id}")
    return self.devices[device_id]


simcore.SimCore._SimCore__get_device = _get_device


IDENTITY = ModbusDeviceIdentification(
    info_name={
        "VendorName": "pymodbus-peer",
        "ProductCode": "PEER",
        "MajorMinorRevision": "3.16",
    }
)


def device(unit):
    values = [100 + unit * 10 + i for i in range(10)]
    data = [SimData(address=0, values=values, datatype=DataType.REGISTERS)]
    return SimDevice(id=unit, simdata=data)


async def main():
    mode = sys.argv[1]
    if mode == "tcp":
        units = [int(u) for u in sys.argv[2:]]
        server = ModbusTcpServer(
            [device(u) for u in units],
            address=("127.0.0.1", 0),
            identity=IDENTITY,
        )
        if not await server.listen():
            raise SystemExit("pymodbus server could not listen")
        port = server.transport.sockets[0].getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
    else:
        port = sys.argv[2]
        units = [int(u) for u in sys.argv[3:]]
        server = ModbusSerialServer(
            [device(u) for u in units],
            framer=FramerType.RTU,
            port=port,
            baudrate=19200,
            identity=IDENTITY,
            ignore_missing_devices=True,
        )
        if not await server.listen():
            raise SystemExit("pymodbus serial server could not open " + port)
        print(json.dumps({"ready": True}), flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
