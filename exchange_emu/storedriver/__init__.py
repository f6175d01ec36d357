"""The store driver: how mailbox servers and hub transport servers talk (RPC in
Exchange, an AMP connection here). Both sides import only this package."""
