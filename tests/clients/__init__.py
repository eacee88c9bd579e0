"""Desktop mail clients (claws-mail, Thunderbird) under Xvfb against ``mailcoach serve``."""
