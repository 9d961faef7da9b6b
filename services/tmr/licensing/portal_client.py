"""The customer's side of online delivery: post the request and the receipts to the vendor's
activation service (`tmr vendor serve`), get the update file back.

`tmr license activate` and `tmr license send-receipt`. Connection failures and refusals are
`PortalClientError` with a code: the service's (UNKNOWN_TICKET, TICKET_EXPIRED, BAD_PROOF,
...) or CONNECTION / HTTP_<status> / BAD_RESPONSE when there is no typed answer.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tmr.errors import TmrError
from tmr.licensing.exchange import (
    LicenseRequest,
    LicenseUpdate,
    ReceiptBundle,
    canonical,
    parse_update,
)

MAX_RESPONSE = 4 * 1024 * 1024
TIMEOUT = 60.0


class PortalClientError(TmrError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.reason = code


def _endpoint(vendor_url: str, path: str) -> str:
    if not vendor_url.startswith(("http://", "https://")):
        raise PortalClientError("BAD_URL", f"vendor URL {vendor_url!r} must be http:// or https://")
    return vendor_url.rstrip("/") + path


def post(
    vendor_url: str,
    path: str,
    body: dict[str, Any],
    *,
    cafile: Path | None = None,
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    url = _endpoint(vendor_url, path)
    context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    req = urllib.request.Request(
        url,
        data=canonical(body),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            data = resp.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        raise _refusal(exc) from None
    except urllib.error.URLError as exc:
        raise PortalClientError("CONNECTION", f"cannot reach {url}: {exc.reason}") from None
    except (OSError, ssl.SSLError) as exc:
        raise PortalClientError("CONNECTION", f"{url}: {exc}") from None
    if len(data) > MAX_RESPONSE:
        raise PortalClientError("BAD_RESPONSE", f"{url}: the answer is too large")
    try:
        obj = json.loads(data)
    except ValueError:
        raise PortalClientError("BAD_RESPONSE", f"{url}: the answer is not JSON") from None
    if not isinstance(obj, dict):
        raise PortalClientError("BAD_RESPONSE", f"{url}: the answer is not a JSON object")
    return obj


def _refusal(exc: urllib.error.HTTPError) -> PortalClientError:
    try:
        obj = json.loads(exc.read(64 * 1024))
        code, message = obj["error"]["code"], obj["error"]["message"]
        if isinstance(code, str) and isinstance(message, str):
            return PortalClientError(code, f"{message} (HTTP {exc.code})")
    except (ValueError, KeyError, TypeError, OSError):
        pass
    return PortalClientError(f"HTTP_{exc.code}", f"{exc.url}: {exc.reason}")


def activate(
    vendor_url: str, ticket: str, request: LicenseRequest, *, cafile: Path | None = None
) -> tuple[LicenseUpdate, dict[str, Any]]:
    """The update file for ``request`` under ``ticket`` (parsed and checked like a file)."""
    obj = post(
        vendor_url, "/v1/activate", {"ticket": ticket, "request": request.to_obj()}, cafile=cafile
    )
    update = obj.get("update")
    if not isinstance(update, dict):
        raise PortalClientError("BAD_RESPONSE", "the answer holds no update file")
    parsed = parse_update(canonical(update), "update file from the vendor")
    return parsed, obj


def send_receipt(
    vendor_url: str, ticket: str, bundle: ReceiptBundle, *, cafile: Path | None = None
) -> dict[str, Any]:
    return post(
        vendor_url, "/v1/receipts", {"ticket": ticket, "receipt": bundle.to_obj()}, cafile=cafile
    )
