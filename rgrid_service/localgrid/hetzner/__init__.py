"""A local stand-in for the part of the Hetzner Cloud API the hcloud provider uses.

Servers it creates boot a real local worker from their cloud-init user_data (see boot.py); a
server whose user_data describes no worker (the control plane's, for one) simply runs (status
`running`) without executing its cloud-init. Only the
local grid's starter should import this package; everything else talks to it as if it were Hetzner.
"""
from .api import create_app

__all__ = ["create_app"]
