"""Tools for the MicroPython sensor-node side; the node code itself is in firmware_bridge/node/."""
