"""Bridges from ticketlab's engines to training frameworks, each an optional extra.

The core never imports a framework: `ticketlab.integrations.lightning` needs
`pip install ticketlab[lightning]` and says so when it is missing.
"""
