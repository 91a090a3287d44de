"""The outbound tests' wiring (the Graph API sandbox and the receiver on loopback over this test's database),
shared by the operations tests."""

from tests.outbound.conftest import out_settings, receiver, sandbox, sandbox_state  # noqa: F401
