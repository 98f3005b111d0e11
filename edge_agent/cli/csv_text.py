"""The text of a vendor's CSV, whatever the spreadsheet saved: UTF-8 (with or without BOM), UTF-16
or UTF-32 with their byte-order mark, or the encoding the technician names (``--encoding``).

Anything else is refused, never guessed: the message names the file, the byte offset (and line)
of the first byte that is not UTF-8, what the file looks like (Windows-1252 / Latin-1, UTF-16
without a BOM) and how to save it as UTF-8, or which ``--encoding`` reads it as it is. A wrong
guess would put a wrong character into a unit (``°C``) of the profile without anyone noticing.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import NoReturn

from edge_agent.cli.common import EXIT_USAGE, CliError

BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))
SAVE_AS = ("save it as UTF-8 (Excel: CSV UTF-8; LibreOffice: character set Unicode (UTF-8))")


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _looks_utf16(data: bytes) -> str:
    """"utf-16-le" / "utf-16-be" when every other byte of the start is NUL (ASCII text as
    UTF-16 without a BOM), else ""."""
    head = data[:400]
    if len(head) < 4:
        return ""
    odd, even = head[1::2], head[0::2]
    if odd.count(0) > 0.8 * len(odd) and even.count(0) < 0.2 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.8 * len(even) and odd.count(0) < 0.2 * len(odd):
        return "utf-16-be"
    return ""


def read_csv_text(path: Path, encoding: str | None = None) -> str:
    """The file's text; CliError (exit 2) naming the byte offset when it cannot be read as
    text in the encoding its BOM, UTF-8 or ``encoding`` says."""
    data = path.read_bytes()
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise CliError(f"--encoding {encoding!r} is not an encoding Python knows",
                           "e.g. utf-8, cp1252, latin-1, utf-16", EXIT_USAGE,
                           "bad_encoding") from None
        name = encoding
    else:
        name = next((enc for bom, enc in BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(name)
    except UnicodeDecodeError as exc:
        _undecodable(path, data, name, exc, encoding is not None)
    utf16 = _looks_utf16(data) if encoding is None and name == "utf-8" else ""
    if utf16:
        raise CliError(f"{path} is not UTF-8: it looks like UTF-16 without a byte-order mark "
                       "(every other byte is NUL)", f"{SAVE_AS}, or pass --encoding {utf16}",
                       EXIT_USAGE, "bad_encoding")
    if "\x00" in text:
        at = text.index("\x00")
        raise CliError(f"{path}: a NUL character at character {at} (line "
                       f"{text.count(chr(10), 0, at) + 1}) read as {name}: not a text table",
                       "is it the CSV export (not .xlsx)? " + SAVE_AS, EXIT_USAGE, "bad_csv")
    return text


def _undecodable(path: Path, data: bytes, name: str, exc: UnicodeDecodeError,
                 asked: bool) -> NoReturn:
    off = exc.start
    where = f"byte {off} (line {_line_of(data, off)}, 0x{data[off]:02x})" if off < len(data) \
        else f"the end ({len(data)} bytes)"
    if asked or name != "utf-8":
        what = "its byte-order mark says " + name if not asked else f"--encoding {name}"
        raise CliError(f"{path} does not read as {name} at {where} ({what})",
                       f"is it a CSV? {SAVE_AS}", EXIT_USAGE, "bad_encoding") from None
    utf16 = _looks_utf16(data)
    if utf16:
        raise CliError(f"{path} is not UTF-8: it looks like UTF-16 without a byte-order mark "
                       f"(NUL bytes from {where})", f"{SAVE_AS}, or pass --encoding {utf16}",
                       EXIT_USAGE, "bad_encoding") from None
    raise CliError(f"{path} is not UTF-8: {where} is not valid UTF-8 (a spreadsheet's "
                   "Windows-1252 / Latin-1, e.g. 0xb0 for °)",
                   f"{SAVE_AS}, or pass --encoding cp1252 if that is what it is",
                   EXIT_USAGE, "bad_encoding") from None
