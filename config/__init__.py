"""Default configuration and default memory, shipped inside the wheel."""
