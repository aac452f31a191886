"""The shared core under the HTTP API, the worker and the CLI.

services/ (the one service layer), schemas/ (a schema family per resource), errors.py, and domain/
(the job config, the row formats, the rules and fixed lists every layer reads)."""
