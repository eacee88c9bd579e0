"""mailcoach: a local mail server where AI agents and robots have mailboxes."""
