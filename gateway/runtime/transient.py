"""Which handler failures are infrastructure outages (wait them out) and which are the record's own fault.

The key-ordered consumer retries a failing record in place. A record that fails because the database or the
broker is unreachable will succeed once it is back, however long that takes, so it is retried forever;
dead-lettering it would push every message of an outage into the dead-letter topic. Any other failure is a
bug or bad data that retrying does not cure: after a few attempts the record is handed to the consumer's
poison hook so its partition moves on.
"""

from __future__ import annotations

import sqlalchemy.exc
from aiokafka.errors import KafkaError

# OSError covers ConnectionError and TimeoutError (asyncio's too): a network path or a server is down or slow.
# sqlalchemy.exc.TimeoutError is the connection pool giving up on a checkout: the database is not keeping up.
TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    OSError,
    KafkaError,
)


def is_transient(exc: BaseException) -> bool:
    """True if `exc`, or an error it was explicitly raised from (`raise ... from`), is an infrastructure outage.

    Only the explicit cause chain counts: a wrapper the caller raised *because of* an outage is still an
    outage, while an error merely raised *during* the handling of one (`__context__`) may be a plain bug.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:  # a bound against pathological (cyclic) chains
        if isinstance(current, TRANSIENT):
            return True
        current = current.__cause__
        seen += 1
    return False
