"""The `edgetune` command line: operator commands, the HTTP client commands and the demo."""
