"""twistd support: `twistd -n klag -c FILE` runs the same service as `klag-collector`.

SIGHUP reloads the config file here too. twistd leaves SIGHUP alone: it rotates its log file
on SIGUSR1 (twisted.scripts._twistd_unix), daemon or not, and a daemon has no terminal
whose hang-up could send SIGHUP.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from . import interpreter
from .config import load_config
from .errors import ConfigError
from .logs import quiet_kafka_python
from .reload_triggers import reload_on_sighup
from .service import KlagService, ListenFailed, make_service

log = Logger(namespace="klag_collector")


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


class StartFailed(SystemExit, Exception):
    """Ends twistd with status 1, its message the one line already logged.

    twistd has no exit status of its own to set (Twisted issue #11335). As an Exception,
    twistd's start-up catches it, removes its pidfile and tells a daemon's parent; re-raised
    from there, as a SystemExit it ends the process with `code` and no traceback.
    """

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.code = 1


class TwistdService(service.MultiService):
    """The exporter's service under twistd: a port that cannot be bound ends twistd.

    While it runs, SIGHUP reloads the exporter's config file.
    """

    def __init__(self, klag: KlagService, reactor: Any) -> None:
        super().__init__()
        self._klag = klag
        self._reactor = reactor
        self._restore_sighup: Optional[Callable[[], None]] = None
        klag.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except ListenFailed as e:
            log.critical("{error}", error=e)
            raise StartFailed(str(e)) from None

    def startService(self) -> None:
        super().startService()
        self._restore_sighup = reload_on_sighup(
            self._reactor.callFromThread, self._klag.reload_config_file
        )

    def stopService(self) -> Any:
        if self._restore_sighup is not None:
            self._restore_sighup()
            self._restore_sighup = None
        return super().stopService()


def makeService(options: Options) -> service.IService:
    """The exporter's service, listening where the config (or --listen) says."""
    from twisted.internet import reactor

    # twistd has no log level option: kafka-python's lines (a couple a second while a broker
    # is down) stay out of its log, as they do under klag-collector without -l debug.
    quiet_kafka_python("info")
    endpoint: Any = None
    if options["listen"]:
        endpoint = endpoints.serverFromString(reactor, options["listen"])
    made = make_service(options["parsed"], reactor, endpoint=endpoint)
    interpreter.tune()
    return TwistdService(made, reactor)
