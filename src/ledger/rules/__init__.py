"""Networking-etiquette rules: the catalogue (E101-E111) and the violations projection.

Importing the package registers every rule of :mod:`ledger.rules.etiquette`.
"""

from ledger.rules import etiquette as etiquette
