"""The ``mailcoach`` console: chat, queue files and auto pilot over the in-process engine."""
