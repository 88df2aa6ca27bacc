"""metav1.Status errors, in the apiserver's shapes (apimachinery api/errors/errors.go), since
kubectl builds its messages from their fields: `details.kind` is the resource for NotFound,
AlreadyExists and Conflict, the Kind for Invalid, whose line kubectl makes from the causes."""

from __future__ import annotations

from typing import Any

from podkit.api.kinds import Kind


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            doc["details"] = self.details
        return doc


def _qualified(kind: Kind) -> str:
    return f"{kind.resource}.{kind.group}" if kind.group else kind.resource


def _details(kind: Kind, name: str, by_kind: bool = False) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": kind.kind if by_kind else kind.resource}
    if kind.group:
        details["group"] = kind.group
    return details


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(kind)} "{name}" not found', _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiError:
    message = f'{_qualified(kind)} "{name}" already exists'
    return ApiError(409, "AlreadyExists", message, _details(kind, name))


def conflict(kind: Kind, name: str, why: str) -> ApiError:
    message = f'Operation cannot be fulfilled on {_qualified(kind)} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(kind, name))


def invalid(kind: Kind, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """causes: (field path, message such as 'Invalid value: "x": ...')."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    if len(causes) > 1:  # an aggregate of errors prints in brackets
        text = f"[{text}]"
    details = _details(kind, name, by_kind=True)
    details["causes"] = [
        {"reason": _CAUSES.get(m.split(":", 1)[0], "FieldValueInvalid"), "message": m, "field": f}
        for f, m in causes
    ]
    qualified = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {text}', details)


# field.ErrorType's text -> the cause's reason
_CAUSES = {
    "Required value": "FieldValueRequired",
    "Invalid value": "FieldValueInvalid",
    "Unsupported value": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
}


def forbidden(kind: Kind, name: str, why: str) -> ApiError:
    """An admission's refusal (admission.NewForbidden)."""
    message = f'{_qualified(kind)} "{name}" is forbidden: {why}'
    return ApiError(403, "Forbidden", message, _details(kind, name))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


UNAUTHORIZED = ApiError(401, "Unauthorized", "Unauthorized")
