"""Error codes of the client API and the exceptions that carry them.

One place for every error a client can see (docs/design.md §4). The wire format
(`tmr.protocol`) sends the code string; the SDK (`tmr.client`) raises the matching
exception class.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    NO_LICENSE_AVAILABLE = "NO_LICENSE_AVAILABLE"
    QUORUM_LOST = "QUORUM_LOST"
    UNKNOWN_LICENSE = "UNKNOWN_LICENSE"
    UNKNOWN_HANDLE = "UNKNOWN_HANDLE"
    NOT_ACTIVE = "NOT_ACTIVE"
    BAD_REQUEST = "BAD_REQUEST"
    LICENSE_EXPIRED = "LICENSE_EXPIRED"
    UNAUTHORIZED = "UNAUTHORIZED"
    POLICY_DENIED = "POLICY_DENIED"  # a rule of the site's policy file refuses the checkout
    TIMEOUT = "TIMEOUT"  # client side only: no server answered in time


class TmrError(Exception):
    """Base class of every error the product raises on purpose."""

    code: ErrorCode | None = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message or (self.code.value if self.code else "error"))
        self.message = message


class ApiError(TmrError):
    """An error answered by (or, for TIMEOUT, about) the TMR service."""

    code: ErrorCode = ErrorCode.BAD_REQUEST


class NoLicenseAvailable(ApiError):
    code = ErrorCode.NO_LICENSE_AVAILABLE


class QuorumLost(ApiError):
    code = ErrorCode.QUORUM_LOST


class UnknownLicense(ApiError):
    code = ErrorCode.UNKNOWN_LICENSE


class UnknownHandle(ApiError):
    code = ErrorCode.UNKNOWN_HANDLE


class NotActive(ApiError):
    code = ErrorCode.NOT_ACTIVE


class BadRequest(ApiError):
    code = ErrorCode.BAD_REQUEST


class LicenseExpired(ApiError):
    code = ErrorCode.LICENSE_EXPIRED


class Unauthorized(ApiError):
    code = ErrorCode.UNAUTHORIZED


class PolicyDenied(ApiError):
    """A rule of the policy file refused the checkout; the message names the rule."""

    code = ErrorCode.POLICY_DENIED


class Timeout(ApiError):
    code = ErrorCode.TIMEOUT


API_ERRORS: dict[ErrorCode, type[ApiError]] = {
    cls.code: cls
    for cls in (
        NoLicenseAvailable,
        QuorumLost,
        UnknownLicense,
        UnknownHandle,
        NotActive,
        BadRequest,
        LicenseExpired,
        Unauthorized,
        PolicyDenied,
        Timeout,
    )
}


def api_error(code: str, message: str = "") -> ApiError:
    """The exception for an error code received on the wire (unknown codes -> BadRequest)."""
    try:
        cls = API_ERRORS[ErrorCode(code)]
    except ValueError:
        return BadRequest(f"unknown error code {code!r}: {message}")
    return cls(message)


class ConfigError(TmrError):
    """A configuration file is missing, malformed or has a bad key."""


class UsageError(TmrError):
    """A command line or tool input the user must fix."""
