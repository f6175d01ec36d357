"""Errors of the mailbox store (an Exchange 2010 mailbox server's mailbox databases)."""

from __future__ import annotations


class UnknownMailbox(LookupError):
    """No mailbox with this address exists in the mailbox store (or in that mailbox database).

    The message names the address, e.g. ``no mailbox zoe@contoso.test in this mailbox store``.
    """

    def __init__(self, address: str, database: str | None = None) -> None:
        where = f"mailbox database {database}" if database else "this mailbox store"
        super().__init__(f"no mailbox {address} in {where}")
        self.address = address
        self.database = database
