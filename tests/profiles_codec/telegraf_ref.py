"""Reference planner for the property tests: Telegraf's ``max_insert`` request optimisation.

A Python transcription of ``optimizeGroupWithinLimits`` (and the sort in
``groupFieldsToRequests``) from influxdata/telegraf, plugins/inputs/modbus/request.go
(``optimization = "max_insert"``, hole size ``optimization_max_register_fill``, which Telegraf
allows in 1..125): fields sorted by
(address asc, length desc); walk them and start a new request when the hole to the previous field
is larger than ``max_extra_registers`` or when ``length + hole + field length`` would exceed the
batch size. Telegraf knows no breaks and warns on overlapping fields, so the tests only compare
maps without overlaps and without breaks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TelegrafRequest:
    address: int
    length: int
    fields: list[tuple[int, int]]  # (address, length)


def max_insert(
    fields: list[tuple[int, int]], max_extra_registers: int, max_batch_size: int
) -> list[TelegrafRequest]:
    if not fields:
        return []
    fs = sorted(fields, key=lambda f: (f[0], -f[1]))
    requests: list[TelegrafRequest] = []
    cur = TelegrafRequest(fs[0][0], fs[0][1], [fs[0]])
    for i in range(1, len(fs)):
        prev_addr, prev_len = fs[i - 1]
        addr, length = fs[i]
        hole = addr - (prev_addr + prev_len)
        if addr < prev_addr + prev_len:  # overlap: Telegraf logs a warning and uses 0
            hole = 0
        interrupt = hole > max_extra_registers
        interrupt = interrupt or cur.length + hole + length > max_batch_size
        if not interrupt:
            cur.length = addr + length - cur.address
            cur.fields.append(fs[i])
            continue
        requests.append(cur)
        cur = TelegrafRequest(addr, length, [fs[i]])
    requests.append(cur)
    return requests
