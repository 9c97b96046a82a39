"""What asks for a config reload: SIGHUP, and POST /-/reload when the config enables it.

Both only call the service's reload_config_file() on the reactor thread; the service reads
the file, plans and applies the change (klag_collector.reload, service.KlagService.reload).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Callable, List, Optional, Union, cast

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import pages, resource, server
from twisted.web.server import Request

from .reload import ReloadResult, describe_plan

# Reads the config file again and runs it; never fails (a refusal is a ReloadResult).
Reload = Callable[[], "defer.Deferred[ReloadResult]"]

# Where the endpoint lives, as Prometheus has it: the site root's child b"-", then b"reload".
RELOAD_PARENT, RELOAD_LEAF = b"-", b"reload"
# Prometheus takes PUT as well as POST.
_METHODS = (b"POST", b"PUT")


class ReloadResource(resource.Resource):
    """POST /-/reload: 200 and what changed, or 400 and the one-line reason it was refused."""

    isLeaf = True

    def __init__(self, reload: Reload) -> None:
        super().__init__()
        self._reload = reload

    def render(self, request: Request) -> Union[bytes, int]:
        if request.postpath != [RELOAD_LEAF]:
            return cast(bytes, pages.notFound().render(request))
        if request.method not in _METHODS:
            request.setHeader(b"allow", b", ".join(_METHODS))
            page = pages.errorPage(405, "Method Not Allowed", "Only POST and PUT are allowed here.")
            return cast(bytes, page.render(request))
        gone: List[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        self._reload().addCallback(_answer, request, gone)
        return server.NOT_DONE_YET


def _answer(result: ReloadResult, request: Request, gone: List[Failure]) -> None:
    if gone:  # the client hung up meanwhile: the reload is done, nobody to tell
        return
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    if result.plan is None:
        request.setResponseCode(400)
        line = result.error
    else:
        line = f"config reloaded: {describe_plan(result.plan)}"
    request.write(line.encode() + b"\n")
    request.finish()


def reload_on_sighup(call_from_thread: Callable[..., None], reload: Reload) -> Callable[[], None]:
    """Run `reload` on the reactor thread at each SIGHUP; returns what restores the old handler.

    `call_from_thread` is the reactor's callFromThread, the one reactor call safe to make from
    a signal handler (twistd rotates its log on SIGUSR1 the same way).
    """

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        call_from_thread(reload)

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore
