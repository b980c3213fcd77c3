"""Fetch a document's image URL without letting the URL reach the server's own network.

Rules, checked on the first URL and again on every redirect hop:
- the scheme is `https` or `http`, and the host is on `serving.index.images.allowed_hosts`
  (an exact name, or `*.suffix` for any name under `suffix`);
- the host is resolved here, and EVERY address it resolves to must be public: no loopback,
  private, link-local, shared (CGNAT), multicast, reserved or unspecified address, no cloud
  metadata address, and no IPv6 address that embeds such an IPv4 one (mapped, 6to4, Teredo,
  NAT64); then the connection goes to that checked address (the Host header and the TLS server
  name carry the host name, so certificates are still verified against it), so a DNS answer that
  changes between the check and the connect cannot redirect it;
- redirects are followed by hand, at most `max_redirects` of them; the body is streamed with a
  byte cap and a deadline; a compressed transfer encoding is refused (no decompression bomb).

Every failure past the static checks reads the same to a client ("could not be fetched"), so a
refused address, a closed port and a timeout cannot be told apart; the cause goes to `detail`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urljoin, urlsplit

import httpx

from serving.config import ImageSettings
from serving.errors import ImageError, ImageProblem

__all__ = ["AddressCheck", "ImageFetcher", "Resolve", "host_allowed", "public_address"]

IPAddress = IPv4Address | IPv6Address
Resolve = Callable[[str, int], Sequence[IPAddress]]
AddressCheck = Callable[[IPAddress], bool]

# Covered by the `ipaddress` properties too; listed so a change in its tables cannot open them.
METADATA_ADDRESSES = frozenset(
    ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64 = ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def public_address(address: IPAddress) -> bool:
    """True when `address` is a public unicast address an image may be fetched from."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None and not public_address(embedded):
            return False
    return address.is_global and not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in METADATA_ADDRESSES
    )


def host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """`host` (lower case, no trailing dot) equals an entry or lies under a `*.suffix` one."""
    for entry in allowed_hosts:
        if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def system_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver, TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ip_address(info[4][0]) for info in infos))


class ImageFetcher:
    """GET image URLs under the module's rules; `resolve`, `address_ok` and `transport` (a
    factory, one transport per fetch) are seams for tests."""

    def __init__(
        self,
        settings: ImageSettings,
        *,
        resolve: Resolve = system_resolve,
        address_ok: AddressCheck = public_address,
        transport: Callable[[], httpx.BaseTransport] | None = None,
    ) -> None:
        self._settings = settings
        self._resolve = resolve
        self._address_ok = address_ok
        self._transport = transport

    def check_source(self, url: str) -> None:
        """Raise `ImageError(SOURCE)` unless `url` is http(s) on an allowed host (no network)."""
        self._target(url)

    def fetch(self, url: str) -> bytes:
        """The body of `url` (redirects followed and re-checked), at most `max_bytes` long."""
        self._target(url)  # a refused source must not read as a fetch failure
        deadline = time.monotonic() + self._settings.fetch_timeout_s
        timeout = httpx.Timeout(self._settings.fetch_timeout_s)
        transport = self._transport() if self._transport else None
        # trust_env=False: no proxy from the environment may stand between check and connect
        with httpx.Client(
            transport=transport, trust_env=False, follow_redirects=False, timeout=timeout
        ) as client:
            for _ in range(self._settings.max_redirects + 1):
                with self._get(client, url, deadline) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return self._body(response, url, deadline)
        raise _failed(url, f"more than max_redirects={self._settings.max_redirects} redirects")

    def _target(self, url: str) -> tuple[str, str, int]:
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        except ValueError as exc:
            raise ImageError(ImageProblem.SOURCE, f"unparsable URL {url!r}: {exc}") from exc
        host = (host or "").rstrip(".")
        if scheme not in _DEFAULT_PORTS or not host:
            raise ImageError(ImageProblem.SOURCE, f"{url!r} is not an http(s) URL with a host")
        if not host_allowed(host, self._settings.allowed_hosts):
            raise ImageError(ImageProblem.SOURCE, f"host {host!r} is not on allowed_hosts")
        return scheme, host, port or _DEFAULT_PORTS[scheme]

    def _hop(self, url: str) -> tuple[str, str, int]:
        try:
            return self._target(url)
        except ImageError as exc:  # a redirect's target: the client learns only "not fetched"
            raise _failed(url, f"redirected: {exc.detail}") from exc

    @contextmanager
    def _get(self, client: httpx.Client, url: str, deadline: float) -> Iterator[httpx.Response]:
        scheme, host, port = self._hop(url)
        addresses = self._checked_addresses(url, host, port)
        parts = urlsplit(url)
        default_port = port == _DEFAULT_PORTS[scheme]
        headers = {
            "Host": host if default_port else f"{host}:{port}",
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            "User-Agent": "clicktune-image-fetch",
        }
        last: Exception | None = None
        for address in addresses:  # the checked addresses only, in the resolver's order
            # Built from parts, never joined: a path like "//other.host/" must stay a path.
            pinned = httpx.URL(scheme=scheme, host=str(address), port=port, path=parts.path or "/")
            if parts.query:
                pinned = pinned.copy_with(query=parts.query.encode())
            request = client.build_request(
                "GET",
                pinned,
                headers=headers,
                extensions={"sni_hostname": host, "timeout": _remaining(deadline)},
            )
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as exc:  # try the next address; refused reads as timeout
                last = exc
                continue
            except httpx.HTTPError as exc:
                raise _failed(url, f"{type(exc).__name__}: {exc}") from exc
            try:
                yield response
            finally:
                response.close()
            return
        raise _failed(url, f"no address of {host!r} accepted a connection: {last}") from last

    def _checked_addresses(self, url: str, host: str, port: int) -> list[IPAddress]:
        try:
            addresses = list(self._resolve(host, port))
        except (OSError, UnicodeError, ValueError) as exc:
            raise _failed(url, f"cannot resolve {host!r}: {exc}") from exc
        forbidden = [str(a) for a in addresses if not self._address_ok(a)]
        if forbidden or not addresses:
            raise _failed(url, f"{host!r} resolves to forbidden addresses {forbidden or 'none'}")
        return addresses

    def _body(self, response: httpx.Response, url: str, deadline: float) -> bytes:
        cap = self._settings.max_bytes
        if response.status_code != 200:
            raise _failed(url, f"HTTP status {response.status_code}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise _failed(url, f"content-encoding {response.headers['content-encoding']!r}")
        if int(response.headers.get("content-length") or 0) > cap:
            raise _too_large(url, cap, f"content-length {response.headers['content-length']}")
        chunks, size = [], 0
        try:
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > cap:
                    raise _too_large(url, cap, f"body passed {cap} bytes")
                if time.monotonic() > deadline:
                    raise _failed(
                        url, f"slower than fetch_timeout_s={self._settings.fetch_timeout_s}"
                    )
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _failed(url, f"{type(exc).__name__}: {exc}") from exc
        return b"".join(chunks)


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _remaining(deadline: float) -> dict[str, float]:
    left = max(deadline - time.monotonic(), 0.001)
    return {"connect": left, "read": left, "write": left, "pool": left}


def _failed(url: str, detail: str) -> ImageError:
    return ImageError(ImageProblem.FETCH, f"{url!r}: {detail}")


def _too_large(url: str, cap: int, detail: str) -> ImageError:
    return ImageError(ImageProblem.TOO_LARGE, f"{url!r}: {detail}", limit=cap)
