"""Configuration files of the services (TOML), validated at start.

Every key is documented here with its default; an unknown key, a missing required key or a
value of the wrong type is refused with a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tmr.errors import ConfigError
from tmr.licensing.curve import CurveKeyError, z85_key_bytes

LOG_LEVELS = ("debug", "info", "warning", "error")
# The longest idle hold a server may be configured with (`ServerConfig.idle_hold_ms`): a
# request that arrives during a hold waits up to that long.
IDLE_HOLD_MAX_MS = 50
# The longest a client request may wait for a takeover (or a pause) to end (`takeover_hold_ms`):
# the SDK's attempt timeout grows to at most 2 s, and a request held longer than its attempt
# timeout is sent again elsewhere instead of answered.
TAKEOVER_HOLD_MAX_MS = 2000
# The waits in milliseconds a server may be configured with: key -> the largest allowed
_MS_BOUNDS = {"idle_hold_ms": IDLE_HOLD_MAX_MS, "takeover_hold_ms": TAKEOVER_HOLD_MAX_MS}


@dataclass(frozen=True)
class BackendConfig:
    """`tmr backend run --config FILE`."""

    name: str  # node name in logs and status (required)
    key_file: Path  # this node's CURVE key pair, from `tmr keygen` (required)
    state_dir: Path  # SQLite database: handle table, promised/accepted epochs (required)
    license_dir: Path  # license copies (*.tmrlic) of this backend's container (required)
    vendor_keys: tuple[Path, ...]  # vendor public key files (vendor.pub) trusted (required)
    allowed_servers: tuple[str, ...]  # Z85 node public keys of the TMR servers (required)
    listen: str = "tcp://0.0.0.0:22360"  # ZeroMQ endpoint for the TMR servers
    machine_id_file: Path = Path("/etc/machine-id")  # part of the fingerprint
    serial: str | None = None  # container serial 130-NNNNNNN (default: from fingerprint)
    ctl_socket: Path = Path("/run/tmr/backend.sock")  # local control socket (status, reload)
    usage_retention: int = 100_000  # usage record: newest committed ops kept (0: none)
    denial_retention: int = 100_000  # denial record: newest refusals kept (0: none)
    log_level: str = "info"


@dataclass(frozen=True)
class BackendRef:
    name: str
    endpoint: str
    public_key: str


@dataclass(frozen=True)
class ServerConfig:
    """`tmr server run --config FILE`."""

    name: str  # unique server id; part of every epoch this server leads (required)
    service_key_file: Path  # the service key pair shared by both TMR servers (required)
    node_key_file: Path  # this server's own key pair for the backend links (required)
    backends: tuple[BackendRef, ...]  # exactly three [[backends]] tables (required)
    client_listen: str = "tcp://0.0.0.0:22350"  # client endpoint (bound on all addresses)
    ctl_socket: Path = Path("/run/tmr/server.sock")  # control socket for keepalived and ctl
    state_dir: Path = Path("/var/lib/tmr/server")  # the highest epoch counter used
    lease_seconds: float = 30.0  # a handle expires this long after its last heartbeat
    backend_timeout: float = 1.0  # a backend that has not answered this long is down
    probe_interval: float = 0.25  # how often backends are probed
    # a promote waits while a majority of backends heard another server lead this recently
    leader_live_window: float = 0.6
    container_serial: str | None = None  # virtual container serial 131-NNNNNNN
    client_allowlist: tuple[str, ...] = ()  # Z85 client public keys; empty: any client
    admin_keys: tuple[str, ...] = ()  # Z85 client public keys that may ask usage reports
    usage_max_rows: int = 200_000  # usage rows per backend in one report (more: BAD_REQUEST)
    # seconds a backend has for each chunk of a report before it is reported unavailable
    usage_query_timeout: float = 5.0
    # WebAdmin and /metrics (none: off); an address that is not loopback needs credentials
    web_listen: str | None = "127.0.0.1:22380"
    web_auth_user: str | None = None  # HTTP basic auth on every web path (with the file below)
    web_auth_password_file: Path | None = None  # file holding that user's password
    # file holding a bearer token (Authorization: Bearer, or the basic-auth password)
    web_auth_token_file: Path | None = None
    web_tls_cert_file: Path | None = None  # serve HTTPS with this PEM certificate (chain) ...
    web_tls_key_file: Path | None = None  # ... and its PEM private key
    web_tls_client_ca_file: Path | None = None  # require client certificates signed by this CA
    web_publish_interval: float = 0.5  # seconds between status snapshots for the web thread
    web_max_handles: int = 1000  # handles listed on the page and in /api/status (0: none)
    web_peer_url: str | None = None  # the other TMR server's WebAdmin URL (a link on the page)
    vip: str | None = None  # the virtual IP: the page shows whether this host holds it
    denial_retention_days: float = 90.0  # NO_LICENSE_AVAILABLE counts kept for usage reports
    # a license that expires within this many days shows the expiry state "warning" (status,
    # WebAdmin, tmr client list, tmr_license_expiry_state in /metrics); 0: never warn
    expiry_warning_days: float = 30.0
    # while busy (200+ client requests a second), after a turn of requests that replicate
    # nothing (heartbeats), wait this many ms before reading again so that the next ones
    # share a wake-up (tmr.server.service, design.md §11); 0: never wait; 0 to 50
    idle_hold_ms: float = 16.0
    # a client request that arrives while this server takes over (or right after a pause of
    # its process, until its backends confirm it) waits up to this many ms for that to end
    # (served once active) instead of being answered NOT_ACTIVE at once
    # (tmr.replication.parking, design.md §5, §6); keep it below the clients' attempt timeout (the
    # SDK's is 500 ms); 0: answer at once; 0 to 2000
    takeover_hold_ms: float = 300.0
    # the site's policy file (include / exclude / max / reserve per license, tmr.policy);
    # none: no rules. Read at start and by `tmr ctl reload`; a bad file is refused whole.
    policy_file: Path | None = None
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)


def _load(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def _check(path: Path, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if (
        isinstance(value, bool)
        and kind is not bool
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise ConfigError(f"{path}: key {key!r} must be {what}, not a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: key {key!r} must be {what}, not {type(value).__name__}")
    return value


def _strs(path: Path, key: str, value: Any) -> tuple[str, ...]:
    _check(path, key, value, list, "a list of strings")
    for v in value:
        _check(path, key, v, str, "a list of strings")
    return tuple(value)


def _common(path: Path, data: dict[str, Any], known: set[str], required: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})"
        )
    missing = sorted(required - set(data))
    if missing:
        raise ConfigError(f"{path}: missing required key {missing[0]!r}")
    level = data.get("log_level", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"{path}: key 'log_level' must be one of {', '.join(LOG_LEVELS)}")


# The shortest lease a server accepts: three of the SDK's shortest heartbeat intervals
# (`tmr.client.client.HEARTBEAT_MIN_INTERVAL`, 0.05 s). A client heartbeats every third of the
# lease, so that a lease outlasts two heartbeats lost or answered late; below this the SDK's
# interval stays at its floor and a lease holds fewer than three heartbeats.
MIN_LEASE_SECONDS = 0.15


def lease_error(value: float) -> str | None:
    """Why `value` is not a lease a server accepts, or None (the server's config and
    `tmr local up` say it in these words)."""
    if MIN_LEASE_SECONDS <= value < math.inf:
        return None
    return (
        f"must be at least {MIN_LEASE_SECONDS:g} s (three of the SDK's shortest heartbeat "
        f"intervals) and finite, not {value:g}"
    )


def _positive(path: Path, key: str, value: Any) -> float:
    _check(path, key, value, (int, float), "a number")
    if not 0 < value < math.inf:  # TOML has nan and inf: neither is a duration
        raise ConfigError(f"{path}: key {key!r} must be greater than 0 (and finite), not {value}")
    return float(value)


def load_backend_config(path: Path) -> BackendConfig:
    data = _load(path)
    known = {f.name for f in fields(BackendConfig)}
    required = {"name", "key_file", "state_dir", "license_dir", "vendor_keys", "allowed_servers"}
    _common(path, data, known, required)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("vendor_keys",):
            out[key] = tuple(Path(p) for p in _strs(path, key, value))
        elif key == "allowed_servers":
            out[key] = _strs(path, key, value)
            if not out[key]:
                raise ConfigError(f"{path}: key 'allowed_servers' must name at least one key")
        elif key in ("key_file", "state_dir", "license_dir", "machine_id_file", "ctl_socket"):
            out[key] = Path(_check(path, key, value, str, "a path string"))
        elif key in ("usage_retention", "denial_retention"):
            out[key] = _check(path, key, value, int, "an integer")
            if value < 0:
                raise ConfigError(f"{path}: key {key!r} must be 0 or more")
        else:
            out[key] = _check(path, key, value, str, "a string")
    return BackendConfig(**out)


def load_server_config(path: Path) -> ServerConfig:
    data = _load(path)
    known = {f.name for f in fields(ServerConfig)} - {"extra"}
    required = {"name", "service_key_file", "node_key_file", "backends"}
    _common(path, data, known, required)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "backends":
            _check(path, key, value, list, "a list of [[backends]] tables")
            refs = []
            for i, b in enumerate(value):
                where = f"backends[{i}]"
                _check(path, where, b, dict, "a table")
                extra = sorted(set(b) - {"name", "endpoint", "public_key"})
                if extra:
                    raise ConfigError(f"{path}: unknown key {where}.{extra[0]!r}")
                for k in ("name", "endpoint", "public_key"):
                    if k not in b:
                        raise ConfigError(f"{path}: missing key {where}.{k}")
                    _check(path, f"{where}.{k}", b[k], str, "a string")
                refs.append(BackendRef(b["name"], b["endpoint"], b["public_key"]))
            if len(refs) != 3:
                raise ConfigError(
                    f"{path}: 'backends' must list exactly 3 backends, not {len(refs)}"
                )
            if len({r.name for r in refs}) != 3:
                raise ConfigError(f"{path}: backend names must be distinct")
            for i, r in enumerate(refs):
                try:
                    z85_key_bytes(r.public_key)
                except CurveKeyError:
                    raise ConfigError(
                        f"{path}: backends[{i}].public_key is not a Z85 CURVE public key"
                    ) from None
            if len({r.public_key for r in refs}) != 3:
                # Three backends with one key are one backend (cloned): never a quorum.
                raise ConfigError(f"{path}: backend public keys must be distinct")
            out[key] = tuple(refs)
        elif key in ("service_key_file", "node_key_file", "ctl_socket", "state_dir"):
            out[key] = Path(_check(path, key, value, str, "a path string"))
        elif key == "lease_seconds":
            out[key] = _positive(path, key, value)
            why = lease_error(out[key])
            if why is not None:
                raise ConfigError(f"{path}: key 'lease_seconds' {why}")
        elif key in ("backend_timeout", "probe_interval", "leader_live_window"):
            out[key] = _positive(path, key, value)
        elif key in ("client_allowlist", "admin_keys"):
            out[key] = _curve_keys(path, key, value)
        elif key == "web_listen":
            out[key] = _check(path, key, value, str, "a host:port string") or None
            if out[key] is not None:
                try:
                    parse_listen(out[key])
                except ValueError as exc:
                    raise ConfigError(f"{path}: key 'web_listen': {exc}") from None
        elif key in WEB_PATH_KEYS or key == "policy_file":
            out[key] = Path(_check(path, key, value, str, "a path string")) if value else None
        elif key in ("web_publish_interval", "denial_retention_days"):
            out[key] = _positive(path, key, value)
        elif key == "expiry_warning_days":
            _check(path, key, value, (int, float), "a number")
            if not 0 <= value <= 3650:
                raise ConfigError(f"{path}: key 'expiry_warning_days' must be 0 to 3650")
            out[key] = float(value)
        elif key in _MS_BOUNDS:
            _check(path, key, value, (int, float), "a number")
            if not 0 <= value <= _MS_BOUNDS[key]:
                raise ConfigError(f"{path}: key {key!r} must be 0 to {_MS_BOUNDS[key]}")
            out[key] = float(value)
        elif key == "usage_query_timeout":
            _check(path, key, value, (int, float), "a number")
            if not 0.5 <= value <= 300:
                raise ConfigError(f"{path}: key 'usage_query_timeout' must be 0.5 to 300 seconds")
            out[key] = float(value)
        elif key == "usage_max_rows":
            out[key] = _check(path, key, value, int, "an integer")
            if not 1 <= value <= 500_000:
                raise ConfigError(f"{path}: key 'usage_max_rows' must be 1 to 500000")
        elif key == "web_max_handles":
            out[key] = _check(path, key, value, int, "an integer")
            if value < 0:
                raise ConfigError(f"{path}: key 'web_max_handles' must be 0 or more")
        elif key in ("web_auth_user", "web_peer_url", "vip"):
            out[key] = _check(path, key, value, str, "a string") or None
        else:
            out[key] = _check(path, key, value, str, "a string")
    _check_web(path, out)
    window = out.get("leader_live_window", ServerConfig.leader_live_window)
    probe = out.get("probe_interval", ServerConfig.probe_interval)
    if window <= probe:
        # An idle leader is heard once per probe_interval: a shorter window would let a
        # promote take over from (and fence) a leader that is alive.
        raise ConfigError(
            f"{path}: key 'leader_live_window' ({window:g}) must be greater than "
            f"'probe_interval' ({probe:g})"
        )
    return ServerConfig(**out)


# The server.toml keys that `tmr ctl reload` (and SIGHUP) put in force in a running server;
# any other key takes effect at the next start (`reload_changes`).
RELOADABLE_SERVER_KEYS = ("client_allowlist", "admin_keys", "policy_file")


def reload_changes(running: ServerConfig, new: ServerConfig) -> tuple[list[str], list[str]]:
    """What a reload of ``new`` over the ``running`` configuration does: the reloadable keys
    whose value changed (put in force), and the other keys whose value changed (in force only
    after a restart), each in the dataclass's order. Key lists compare as sets."""

    def value(cfg: ServerConfig, name: str) -> Any:
        v = getattr(cfg, name)
        return frozenset(v) if name in ("client_allowlist", "admin_keys") else v

    applied: list[str] = []
    restart: list[str] = []
    for f in fields(ServerConfig):
        if value(running, f.name) != value(new, f.name):
            (applied if f.name in RELOADABLE_SERVER_KEYS else restart).append(f.name)
    return applied, restart


def _curve_keys(path: Path, key: str, value: Any) -> tuple[str, ...]:
    """A list of Z85 CURVE public keys (40 characters each)."""
    from tmr.licensing.curve import z85_key_bytes  # here: tmr.licensing imports much

    keys = _strs(path, key, value)
    for i, text in enumerate(keys):
        try:
            z85_key_bytes(text, f"{key}[{i}]")
        except Exception:
            raise ConfigError(
                f"{path}: {key}[{i}] is not a Z85 CURVE public key (40 characters)"
            ) from None
    return keys


WEB_PATH_KEYS = (
    "web_auth_password_file",
    "web_auth_token_file",
    "web_tls_cert_file",
    "web_tls_key_file",
    "web_tls_client_ca_file",
)


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6; port 0: any free port) -> (host, port);
    ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"expected host:port (e.g. 0.0.0.0:22380), not {text[:60]!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets ([::1]:22380), not {text[:60]!r}")
    return host, int(port)


def _check_web(path: Path, out: dict[str, Any]) -> None:
    """Keys that only make sense together."""
    if bool(out.get("web_auth_user")) != bool(out.get("web_auth_password_file")):
        raise ConfigError(
            f"{path}: 'web_auth_user' and 'web_auth_password_file' must be set together"
        )
    if bool(out.get("web_tls_cert_file")) != bool(out.get("web_tls_key_file")):
        raise ConfigError(f"{path}: 'web_tls_cert_file' and 'web_tls_key_file' go together")
    if out.get("web_tls_client_ca_file") and not out.get("web_tls_cert_file"):
        raise ConfigError(
            f"{path}: 'web_tls_client_ca_file' needs 'web_tls_cert_file' and 'web_tls_key_file'"
        )
    listen = out.get("web_listen", ServerConfig.web_listen)
    credentials = (
        out.get("web_auth_token_file")
        or out.get("web_auth_password_file")
        or out.get("web_tls_client_ca_file")
    )
    if listen is not None and not credentials:
        host = parse_listen(listen)[0]
        if not _loopback(host):
            raise ConfigError(
                f"{path}: 'web_listen' {listen!r} is not a loopback address, and WebAdmin "
                "(status, handles, /metrics) needs authentication there: set "
                "'web_auth_token_file' (or 'web_auth_user' and 'web_auth_password_file'), "
                "or listen on 127.0.0.1"
            )


def _loopback(host: str) -> bool:
    """Is ``host`` reachable from this machine only? (A host name might resolve to anything.)"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
