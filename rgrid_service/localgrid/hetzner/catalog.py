"""Static catalogues (locations, datacenters, server types, images) in the Hetzner Cloud API's shape.

Fixed data, because these are read-only on Hetzner too. Ids of long-lived entries are Hetzner's
own; prices are net EUR from Hetzner's public price list (approximate; VAT 19 % for gross).
"""
from __future__ import annotations

import copy

TiB = 1024**4

LOCATIONS = [
    {"id": 1, "name": "fsn1", "description": "Falkenstein DC Park 1", "country": "DE",
     "city": "Falkenstein", "latitude": 50.47612, "longitude": 12.370071, "network_zone": "eu-central"},
    {"id": 2, "name": "nbg1", "description": "Nuremberg DC Park 1", "country": "DE",
     "city": "Nuremberg", "latitude": 49.452102, "longitude": 11.076665, "network_zone": "eu-central"},
    {"id": 3, "name": "hel1", "description": "Helsinki DC Park 1", "country": "FI",
     "city": "Helsinki", "latitude": 60.169855, "longitude": 24.938379, "network_zone": "eu-central"},
]

# (datacenter id, name, description, location name)
_DATACENTERS = [(4, "fsn1-dc14", "Falkenstein 1 virtual DC 14", "fsn1"),
                (2, "nbg1-dc3", "Nuremberg 1 virtual DC 3", "nbg1"),
                (3, "hel1-dc2", "Helsinki 1 virtual DC 2", "hel1")]

# Retired types stay listed (deprecated) so a program that still names one gets Hetzner's answer.
_DEPRECATION_CX22 = {"announced": "2025-10-16T06:00:00+00:00", "unavailable_after": "2026-01-01T00:00:00+00:00"}

# (id, name, description, cores, memory GB, disk GB, cpu_type, category, hourly net, monthly net, deprecation)
_SERVER_TYPES = [
    (104, "cx22", "CX22", 2, 4.0, 40, "shared", "cost_optimized", "0.0060", "3.7900", _DEPRECATION_CX22),
    (114, "cx23", "CX23", 2, 4.0, 40, "shared", "cost_optimized", "0.0048", "2.9900", None),
    (115, "cx33", "CX33", 4, 8.0, 80, "shared", "cost_optimized", "0.0080", "4.9900", None),
    (116, "cx43", "CX43", 8, 16.0, 160, "shared", "cost_optimized", "0.0152", "9.4900", None),
    (22, "cpx11", "CPX 11", 2, 2.0, 40, "shared", "regular_purpose", "0.0070", "4.3500", None),
    (23, "cpx21", "CPX 21", 3, 4.0, 80, "shared", "regular_purpose", "0.0121", "7.5500", None),
    (24, "cpx31", "CPX 31", 4, 8.0, 160, "shared", "regular_purpose", "0.0218", "13.6000", None),
    (96, "ccx13", "CCX13 Dedicated CPU", 2, 8.0, 80, "dedicated", "general_purpose", "0.0200", "12.4900", None),
]

# (id, name, description, os_flavor, os_version, architecture, created)
_IMAGES = [
    (114690387, "debian-12", "Debian 12", "debian", "12", "x86", "2023-06-13T06:00:02+00:00"),
    (114690389, "debian-12", "Debian 12", "debian", "12", "arm", "2023-06-13T06:00:05+00:00"),
    (161547269, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "x86", "2024-04-25T06:00:02+00:00"),
    (161547270, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "arm", "2024-04-25T06:00:04+00:00"),
]


def _money(net: str, decimals_net: int = 10) -> dict:
    value = float(net)
    return {"net": f"{value:.{decimals_net}f}", "gross": f"{value * 1.19:.16f}"}


def _server_type(row) -> dict:
    tid, name, desc, cores, mem, disk, cpu, category, hourly, monthly, deprecation = row
    prices = [{"location": loc["name"], "price_hourly": _money(hourly), "price_monthly": _money(monthly),
               "included_traffic": 20 * TiB, "price_per_tb_traffic": _money("1.00")} for loc in LOCATIONS]
    return {
        "id": tid, "name": name, "description": desc, "category": category, "cores": cores, "memory": mem,
        "disk": disk, "storage_type": "local", "cpu_type": cpu, "architecture": "x86",
        "included_traffic": 0, "prices": prices,
        "deprecated": deprecation is not None, "deprecation": copy.deepcopy(deprecation),
        "locations": [{"id": loc["id"], "name": loc["name"], "deprecation": copy.deepcopy(deprecation),
                       "available": deprecation is None, "recommended": deprecation is None}
                      for loc in LOCATIONS],
    }


def _image(row) -> dict:
    iid, name, desc, flavor, version, arch, created = row
    return {
        "id": iid, "type": "system", "status": "available", "name": name, "description": desc,
        "image_size": None, "disk_size": 5, "created": created, "created_from": None, "bound_to": None,
        "os_flavor": flavor, "os_version": version, "architecture": arch, "rapid_deploy": True,
        "protection": {"delete": False}, "deprecated": None, "deprecation": None, "deleted": None, "labels": {},
    }


SERVER_TYPES = [_server_type(r) for r in _SERVER_TYPES]
IMAGES = [_image(r) for r in _IMAGES]
_ORDERABLE = [t["id"] for t in SERVER_TYPES if not t["deprecated"]]
DATACENTERS = [
    {"id": did, "name": name, "description": desc,
     "location": next(loc for loc in LOCATIONS if loc["name"] == location),
     "server_types": {"supported": [t["id"] for t in SERVER_TYPES], "available": list(_ORDERABLE),
                      "available_for_migration": list(_ORDERABLE)}}
    for did, name, desc, location in _DATACENTERS
]


def find(items: list[dict], id_or_name) -> dict | None:
    """An entry by id (int or digit string) or by name; a fresh copy, so callers may change it."""
    if isinstance(id_or_name, bool) or id_or_name is None:
        return None
    if isinstance(id_or_name, int) or (isinstance(id_or_name, str) and id_or_name.isdigit()):
        hits = [i for i in items if i["id"] == int(id_or_name)]
    else:
        hits = [i for i in items if i.get("name") == id_or_name]
    return copy.deepcopy(hits[0]) if hits else None


def image_for(id_or_name, architecture: str) -> dict | None:
    """An image by id, or by name for the server type's architecture (names repeat across arches)."""
    if isinstance(id_or_name, int) or (isinstance(id_or_name, str) and id_or_name.isdigit()):
        return find(IMAGES, id_or_name)
    return find([i for i in IMAGES if i["architecture"] == architecture], id_or_name)


def datacenter_of(location_name: str) -> dict:
    return copy.deepcopy(next(d for d in DATACENTERS if d["location"]["name"] == location_name))
