"""tmr.client: the Python SDK of the TMR license service (see docs/client-guide.md).

    from tmr.client import Client

    with Client(["tcp://10.0.0.100:22350"], service_key) as client:
        with client.checkout(6000123, 42) as handle:
            ...

Errors are the typed exceptions of `tmr.errors` (re-exported here): `NoLicenseAvailable`,
`QuorumLost`, `UnknownLicense`, `UnknownHandle`, `NotActive`, `BadRequest`,
`LicenseExpired`, `Unauthorized`, `PolicyDenied`, `Timeout`, all subclasses of `ApiError`.
"""

from tmr.client._channel import ClientClosedError
from tmr.client.client import Client, Handle, LostCallback, QueuedCallback
from tmr.client.keys import CurveKeyPair, load_client_keys, load_public_key
from tmr.errors import (
    ApiError,
    BadRequest,
    ErrorCode,
    LicenseExpired,
    NoLicenseAvailable,
    NotActive,
    PolicyDenied,
    QuorumLost,
    Timeout,
    TmrError,
    Unauthorized,
    UnknownHandle,
    UnknownLicense,
)
from tmr.keys import NodeKeys, generate_keypair
from tmr.protocol.client_api import (
    BackendStatus,
    CheckoutResult,
    CryptResult,
    LicenseEntry,
    ListResult,
    StatusResult,
)
from tmr.replication.types import AccessMode

__all__ = [
    "AccessMode",
    "ApiError",
    "BackendStatus",
    "BadRequest",
    "CheckoutResult",
    "Client",
    "ClientClosedError",
    "CryptResult",
    "CurveKeyPair",
    "ErrorCode",
    "Handle",
    "LicenseEntry",
    "LicenseExpired",
    "ListResult",
    "LostCallback",
    "NoLicenseAvailable",
    "NodeKeys",
    "NotActive",
    "PolicyDenied",
    "QueuedCallback",
    "QuorumLost",
    "StatusResult",
    "Timeout",
    "TmrError",
    "Unauthorized",
    "UnknownHandle",
    "UnknownLicense",
    "generate_keypair",
    "load_client_keys",
    "load_public_key",
]
