"""The socket side of ``tcp_endpoint``: opening a connection, and the read buffer its endpoints
share. Plain non-blocking sockets watched by the event loop, no asyncio transports (see
``tcp_endpoint`` for why)."""

from __future__ import annotations

import asyncio
import socket
import threading

RECV_BUFFER = 16384  # the read buffer (one per thread): many answers a read, > 2 frames
_LOCAL = threading.local()


def read_buffer() -> tuple[bytearray, memoryview]:
    """This thread's read buffer, shared by its endpoints (made on first use).

    ``sock.recv(n)`` would allocate ``n`` bytes a read (asyncio's plain protocols read 256 KiB:
    with glibc an mmap and munmap per answer, ~25 µs measured, unless its dynamic mmap threshold
    happens to have been raised); one buffer per endpoint would hold 2 MiB over a district of 500
    endpoints. A read (``recv_into`` and the parsing of the frames in it) runs in one go in the
    loop's thread; an endpoint keeps only the bytes of a partial frame, if any."""
    try:
        return _LOCAL.buffer  # type: ignore[no-any-return]
    except AttributeError:
        buf = bytearray(RECV_BUFFER)
        _LOCAL.buffer = (buf, memoryview(buf))
        return _LOCAL.buffer  # type: ignore[no-any-return]


async def open_connection(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket (TCP_NODELAY, as asyncio's transports set it: each
    request leaves in its own segment). Addresses tried in ``getaddrinfo`` order; a numeric host
    resolves inline, a name in the loop's resolver (as ``loop.create_connection`` does)."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    errors: list[OSError] = []
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:  # cancelled (the connect timed out)
            sock.close()
            raise
        return sock
    if not errors:
        raise OSError(f"getaddrinfo({host!r}) returned no address")
    if len({str(e) for e in errors}) == 1:
        raise errors[0]
    raise OSError(f"multiple exceptions: {', '.join(str(e) for e in errors)}")
