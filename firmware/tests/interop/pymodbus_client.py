"""Independent Modbus client (pymodbus) against the seal node served on a pty.

Usage: python pymodbus_client.py PORT UNIT
Every function code the node implements, the exceptions, and device identification. The node must
have been fed the sample `S 1 0 0 12000` (lid closed, gate shut, 12 mA) and run with
`--storage-fails-after 1`. Prints one line per check; exits 1 on the first failure.
"""
import sys

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient

port, unit = sys.argv[1], int(sys.argv[2])
client = ModbusSerialClient(port=port, framer=FramerType.RTU, baudrate=19200, timeout=2, retries=0)
if not client.connect():
    sys.exit(f"cannot open {port}")
checks = 0


def check(name, got, want):
    global checks
    if got != want:
        print(f"FAIL {name}: got {got!r}, want {want!r}", flush=True)
        sys.exit(1)
    checks += 1
    print(f"ok {name}", flush=True)


def ok(rr):
    if rr.isError():
        print(f"FAIL unexpected error {rr}", flush=True)
        sys.exit(1)
    return rr


def exception(rr):
    return rr.exception_code if rr.isError() else None


d = {"device_id": unit}
check("01 read coils", ok(client.read_coils(0, count=2, **d)).bits[:2], [False, False])
check("02 read discrete inputs", ok(client.read_discrete_inputs(0, count=5, **d)).bits[:5],
      [True, False, False, False, False])
check("03 read holding registers", ok(client.read_holding_registers(0, count=8, **d)).registers,
      [unit, 192, 2, 50, 5000, 1000, 8000, 0])
check("04 read input registers", ok(client.read_input_registers(0, count=4, **d)).registers,
      [2500, 12000, 1, 0])
check("04 firmware version", ok(client.read_input_registers(10, count=1, **d)).registers, [0x0001])
ok(client.write_coil(1, True, **d))
check("05 write single coil", ok(client.read_coils(0, count=2, **d)).bits[:2], [False, True])
ok(client.write_coils(0, [True, False], **d))
check("0F write multiple coils", ok(client.read_coils(0, count=2, **d)).bits[:2], [True, False])
ok(client.write_register(3, 100, **d))
check("06 write single register (staged)", ok(client.read_holding_registers(3, count=1, **d)).registers, [100])
ok(client.write_registers(4, [6000, 1200], **d))
check("10 write multiple registers (staged)", ok(client.read_holding_registers(3, count=3, **d)).registers,
      [100, 6000, 1200])
ok(client.write_register(7, 0xC0DE, **d))
# Committed: level 12 mA now scales to the new 6000 mm span.
check("commit applies settings", ok(client.read_input_registers(0, count=1, **d)).registers, [3000])
check("08/00 return query data", ok(client.diag_query_data(b"\xa5\x37", **d)).message, b"\xa5\x37")

rr = ok(client.read_device_information(read_code=1, object_id=0, **d))
check("2B/0E basic", rr.information, {0: b"sealwatch", 1: b"SW-SN1", 2: b"0.1.0"})
rr = ok(client.read_device_information(read_code=3, object_id=0, **d))
check("2B/0E extended serial", rr.information.get(0x80), b"SN-PTY-0001")
check("2B/0E extended product name", rr.information.get(0x04), b"sealwatch seal node")
rr = ok(client.read_device_information(read_code=4, object_id=0x80, **d))
check("2B/0E individual", rr.information, {0x80: b"SN-PTY-0001"})

check("exception 01 (read exception status)", exception(client.read_exception_status(**d)), 1)
check("exception 01 (diagnostics sub-function)", exception(client.diag_read_bus_message_count(**d)), 1)
check("exception 02 (read past the map)", exception(client.read_holding_registers(0, count=9, **d)), 2)
check("exception 02 (coil past the map)", exception(client.write_coil(2, True, **d)), 2)
check("exception 02 (absent object)", exception(client.read_device_information(read_code=4, object_id=5, **d)), 2)
check("exception 03 (unit id 0)", exception(client.write_register(0, 0, **d)), 3)
check("exception 03 (bad commit magic)", exception(client.write_register(7, 1, **d)), 3)
check("exception 04 (storage fails)", exception(client.write_register(7, 0xC0DE, **d)), 4)
client.close()
print(f"pymodbus: {checks} checks passed", flush=True)
