"""Reading a campaign: its status, best, report, comparison, export and evaluation (the ``hpsrl``
commands people run on a campaign's files)."""
