"""Delivery: one path for everything the bot receives and sends.

- `inbound.Inbound`: requests kept in the inbox before the platform's ack, handled once.
- `sender.Sender`: every outbox row (replies, notices, reminders) claimed and sent.
- `liveness.Liveness`: each process's heartbeat; claims hold only while their holder lives.
- `errors`: what adapters raise when a send fails (temporary or permanent).
- `compat.Outbox`: the former `Outbox(db, clock, senders).deliver_due()`, on the same path.
"""

from bot.delivery.compat import Outbox
from bot.delivery.errors import DeliveryFailure, Parts, PermanentFailure, TemporaryFailure
from bot.delivery.inbound import Inbound
from bot.delivery.liveness import Liveness
from bot.delivery.sender import Sender

__all__ = ["DeliveryFailure", "Inbound", "Liveness", "Outbox", "Parts", "PermanentFailure",
           "Sender", "TemporaryFailure"]
