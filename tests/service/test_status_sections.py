"""A status section that cannot be built (a disk failing under it) is reported as failed, with an
unhealthy reason; the other sections and the status as a whole stand."""

from __future__ import annotations

import errno

import pytest

from edge_agent.service.status import _section


def test_a_section_that_fails_is_reported_as_failed_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reasons: list[str] = []

    def unreadable() -> dict[str, int]:
        raise OSError(errno.EIO, "Input/output error")

    assert _section(reasons, "outbox", unreadable) == {
        "failed": "OSError: [Errno 5] Input/output error"}
    assert _section(reasons, "config", lambda: {"state": "committed"}) == {"state": "committed"}
    assert reasons == ["status: outbox unreadable: [Errno 5] Input/output error"]
    assert "status_section_failed section=outbox" in caplog.text
