"""mailcoach: a local mail server where AI agents and robots have mailboxes."""

__all__ = ["__version__"]

__version__ = "0.3.0"
