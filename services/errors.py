"""Errors the service layer raises. The API turns each into OpenAI's error shape
`{"error": {"message", "type", "param", "code"}}` with its HTTP status; Celery tasks and agent
tools raise the same classes, so a rule's message is written once."""

from __future__ import annotations

from typing import Any


class EdgetuneError(Exception):
    status_code = 400
    type = "invalid_request_error"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.details = message, param, code, details
        self.headers: dict[str, str] = {}  # extra HTTP response headers (Retry-After)

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}


class InvalidRequest(EdgetuneError):
    pass


class EvalGateFailed(EdgetuneError):
    """A job's model or artifacts did not meet its gate policy: a result, not a crash."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="gate", code="eval_gate_failed")


class InsufficientData(EdgetuneError):
    """Synthesis kept fewer rows than the floor a job trains on (synth/floor.py): the job ends
    before training, with the counts and the top drop reasons, billed only for the teacher."""

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message, param="task.num_examples", code="insufficient_data", details=details)


class ExportFailed(EdgetuneError):
    """A device artifact could not be made or run (e.g. its export failed its parity check, or its
    runtime died scoring it): the job fails naming the target, not as an internal error."""

    def __init__(self, target_index: int, message: str) -> None:
        super().__init__(message, param=f"targets[{target_index}]", code="export_failed")


class AuthenticationError(EdgetuneError):
    status_code = 401
    type = "authentication_error"


class PaymentRequired(EdgetuneError):
    """Over a budget (the job's own cap or the org's remaining budget); nothing was started."""

    status_code = 402
    type = "insufficient_quota"


class BudgetExhausted(PaymentRequired):
    """A running job reached its budget_usd; the worker stopped it and published nothing."""


class NotFound(EdgetuneError):
    status_code = 404
    type = "not_found_error"


class Conflict(EdgetuneError):
    status_code = 409
    type = "conflict_error"


class PayloadTooLarge(EdgetuneError):
    status_code = 413


class RangeNotSatisfiable(EdgetuneError):
    status_code = 416


class RateLimited(EdgetuneError):
    """Over one of the org's limits (services/limits.py): OpenAI's 429 shape, with Retry-After."""

    status_code = 429
    type = "requests"

    def __init__(self, message: str, *, retry_after: int, code: str = "rate_limit_exceeded") -> None:
        super().__init__(message, code=code)
        self.headers["Retry-After"] = str(retry_after)


class ServiceUnavailable(EdgetuneError):
    status_code = 503
    type = "service_unavailable_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
