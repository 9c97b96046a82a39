"""twistd support: `twistd -n klag -c FILE` runs the same service as `klag-collector`."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.python import usage

from .config import load_config
from .errors import ConfigError
from .service import make_service


class Options(usage.Options):
    """Command-line options of the twistd plugin."""

    optParameters = [
        ["config", "c", None, "TOML or YAML config file (required)."],
        [
            "listen",
            None,
            None,
            "strports description of the HTTP endpoint, e.g. tcp:8000:interface=127.0.0.1 "
            "(default: http_host and http_port from the config).",
        ],
    ]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self["parsed"] = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> service.IService:
    """The exporter's service, listening where the config (or --listen) says."""
    from twisted.internet import reactor

    endpoint: Any = None
    if options["listen"]:
        endpoint = endpoints.serverFromString(reactor, options["listen"])
    return make_service(options["parsed"], reactor, endpoint=endpoint)
