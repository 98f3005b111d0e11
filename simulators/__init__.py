"""Software stand-ins for every city device, on real transports, with faults on demand."""
