"""tmr.vendor: the ISV's tool (`tmr vendor ...`): vendor keys and issuing TMR license sets."""

from tmr.vendor.issuing import IssuedCopy, IssuedSet, issue_set, parse_expiry, parse_features
from tmr.vendor.profile import VendorProfile, init_vendor, load_vendor

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
