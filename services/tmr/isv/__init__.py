"""tmr.isv: the independent software vendor's tool (`tmr vendor ...`): vendor keys, issuing
TMR license sets, the vendor's side of the offline exchange.

Named `isv`, not `vendor`: linters, duplicate finders and code statistics take any `vendor/`
folder for third-party code and skip it."""

from tmr.isv.issuing import IssuedCopy, IssuedSet, issue_set, parse_expiry, parse_features
from tmr.isv.profile import VendorProfile, init_vendor, load_vendor

__all__ = [
    "IssuedCopy",
    "IssuedSet",
    "VendorProfile",
    "init_vendor",
    "issue_set",
    "load_vendor",
    "parse_expiry",
    "parse_features",
]
