"""Tests of the Docker image's files, run on the host (there is no container engine here)."""
