"""What the operating system and the service sandbox constrain, in one place.

Clock state (``clock``), sd_notify (``notify``), the unit file as systemd reads it
(``unit_file``), the garbage collector's tuning (``runtime``): code whose behaviour depends on what
the host and the hardened systemd unit allow. A base layer: any stage or outer layer may import
it; it imports only the shared leaves. Its tests run inside the unit's sandbox (tests/sandbox/).
"""
