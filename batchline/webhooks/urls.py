"""Webhook URL safety: which addresses a URL may reach, checked at registration and per attempt."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from batchline.settings import Settings
from batchline.webhooks.errors import DeliveryFailed, UnsafeUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: last 32 bits are IPv4
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
DEFAULT_PORTS = {"http": 80, "https": 443}

CLOUD_METADATA = "cloud metadata"
# Instance metadata and platform services of the major clouds: they hand out credentials,
# so no webhook may reach them, whatever the policy allows. The link-local ones are refused
# as link-local anyway; they are listed so the table is whole. Embedded IPv4 forms (mapped,
# NAT64, 6to4, Teredo, compatible) are judged by the address they carry (see unwrap).
METADATA_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        # The shared well-known address: AWS, GCP (metadata.google.internal), Azure IMDS,
        # Oracle, DigitalOcean, Hetzner, Linode, OpenStack, IBM Cloud, Huawei Cloud.
        # docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html
        # cloud.google.com/compute/docs/metadata/querying-metadata
        # learn.microsoft.com/azure/virtual-machines/instance-metadata-service
        # docs.oracle.com/iaas/Content/Compute/Tasks/gettingmetadata.htm
        # docs.openstack.org/nova/latest/user/metadata.html
        "169.254.169.254/32",
        # AWS's IPv6 block for instance-local services: IMDS fd00:ec2::254 (Nitro), EKS Pod
        # Identity fd00:ec2::23, DNS fd00:ec2::253, time fd00:ec2::123 (the IMDS page above,
        # docs.aws.amazon.com/eks/latest/userguide/pod-id-agent-setup.html).
        "fd00:ec2::/32",
        # AWS ECS task credentials and the EKS Pod Identity agent over IPv4.
        # docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html
        "169.254.170.2/32",
        "169.254.170.23/32",
        # GCP's metadata server for IPv6-only VMs (the querying-metadata page above).
        "fd20:ce::254/128",
        # Azure WireServer: a public address that answers only inside Azure.
        # learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16
        "168.63.129.16/32",
        # Alibaba Cloud ECS metadata, in the shared address space 100.64.0.0/10.
        # alibabacloud.com/help/ecs/user-guide/overview-of-ecs-instance-metadata
        "100.100.100.200/32",
        # Oracle Cloud: the legacy (Classic) metadata address, and IMDS over IPv6 as the OCI
        # SDK reaches it (oracle/oci-python-sdk, instance_principals_security_token_signer.py).
        "192.0.0.192/32",
        "fd00:c1::a9fe:a9fe/128",
        # Akamai (Linode) metadata over IPv6.
        # techdocs.akamai.com/cloud-computing/docs/metadata-service-api
        "fd00:a9fe:a9fe::1/128",
        # OpenStack (and Linode) metadata over IPv6.
        # specs.openstack.org/openstack/neutron-specs/specs/ussuri/metadata-add-ipv6-support.html
        "fe80::a9fe:a9fe/128",
        # Tencent Cloud CVM metadata (metadata.tencentyun.com).
        # tencentcloud.com/document/product/213/4934
        "169.254.0.23/32",
        # Scaleway instance metadata, IPv4 and IPv6.
        # docs.cloud-init.io/en/latest/reference/datasources/scaleway.html
        "169.254.42.42/32",
        "fd00:42::42/128",
    )
)
# Kinds the policy can open; every other kind is refused whatever it says.
POLICY_KINDS = ("loopback", "private")


@dataclass(frozen=True)
class Policy:
    """Which non-public addresses a webhook may reach (neither, by default)."""

    allow_loopback: bool = False
    allow_private: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(settings.webhook_allow_loopback, settings.webhook_allow_private)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (every address already checked) and what to ask for."""

    scheme: str
    host: str  # for the Host header, SNI and certificate checks
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]


def display(url: str) -> str:
    """The URL without credentials, query or fragment (they may hold tokens): safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed url>"
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an http(s) URL; UnsafeUrl if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"malformed webhook URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("a webhook URL must be http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl("a webhook URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("a webhook URL must not carry credentials (user:password@)")
    if any(c in url for c in "\r\n\t ") or not url.isprintable():
        raise UnsafeUrl("a webhook URL must not contain whitespace or control characters")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme], path


def unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, Teredo, compatible)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in IPV4_COMPATIBLE and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return ip


def category(ip: IPAddress) -> str | None:
    """What kind of non-public address this is, or None for a public one."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    # Deprecated site-local fec0::/10 (RFC 3879) is private in practice, yet `is_global`
    # calls it global.
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    if ip.is_private or not ip.is_global or site_local:
        return "private"
    return None


def is_cloud_metadata(ip: IPAddress) -> bool:
    """Whether this address (or the IPv4 address an IPv6 form carries) is a metadata service."""
    inner = unwrap(ip)
    return any(net.version == inner.version and inner in net for net in METADATA_NETWORKS)


def refusal(address: str, policy: Policy) -> str | None:
    """Why this address may not be reached under the policy, or None when it may.

    An IPv6 form that carries an IPv4 address is judged by that address: `is_global` on
    the outer form alone passes 64:ff9b::7f00:1 (NAT64 of 127.0.0.1), 2002:7f00:1::
    (6to4) and ::127.0.0.1. Cloud metadata addresses are refused whatever the policy; a
    link-local one is named as link-local.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    kind = category(unwrap(ip))
    if kind is not None and kind not in POLICY_KINDS:
        return kind
    if is_cloud_metadata(ip):
        return CLOUD_METADATA
    if kind is None:
        return None
    if kind == "loopback" and policy.allow_loopback:
        return None
    if kind == "private" and policy.allow_private:
        return None
    return kind


def _addresses(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise DeliveryFailed(f"cannot resolve {host}: {exc}") from None
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr not in seen:
            seen.append(addr)
    if not seen:
        raise DeliveryFailed(f"{host} resolves to no address")
    return seen


def resolve(url: str, policy: Policy) -> Target:
    """Check the URL and every address its host resolves to; refuse if any is not allowed."""
    scheme, host, port, path = parse(url)
    addresses = _addresses(host, port)
    for addr in addresses:
        reason = refusal(addr, policy)
        if reason is not None:
            raise UnsafeUrl(f"{display(url)} resolves to {addr} ({reason}); refused")
    return Target(scheme, host, port, path, tuple(addresses))
