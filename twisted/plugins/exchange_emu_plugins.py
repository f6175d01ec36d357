"""twistd plugins: one per Exchange 2010 server role, plus the whole lab.

Nothing is imported until twistd picks the subcommand (see
twisted/plugins/twisted_mail.py for the pattern).
"""

from twisted.application.service import ServiceMaker

exchange_hub = ServiceMaker(
    "Exchange 2010 hub transport server",
    "exchange_emu.roles.hub",
    "An Exchange 2010 hub transport server of an organization file",
    "exchange-hub",
)
exchange_edge = ServiceMaker(
    "Exchange 2010 edge transport server",
    "exchange_emu.roles.edge",
    "An Exchange 2010 edge transport server of an organization file",
    "exchange-edge",
)
exchange_mailbox = ServiceMaker(
    "Exchange 2010 mailbox server",
    "exchange_emu.roles.mailbox",
    "An Exchange 2010 mailbox server (Mail Submission service, store driver)",
    "exchange-mailbox",
)
exchange_legacy = ServiceMaker(
    "Legacy mail server",
    "exchange_emu.roles.legacy",
    "An Exchange 2003/2007 transport server or a non-Exchange MTA",
    "exchange-legacy",
)
exchange_lab = ServiceMaker(
    "Exchange lab",
    "exchange_emu.roles.lab",
    "A whole Exchange organization from one organization file",
    "exchange-lab",
)
