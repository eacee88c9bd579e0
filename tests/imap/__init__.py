"""Tests of the sans-I/O IMAP core: parser, responses, FETCH, SEARCH, connection."""
