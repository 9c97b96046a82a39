"""cycle_bench's instrumentation: what each cycle asks of Kafka, and where its time goes.

Everything here wraps functions by name, in this process only; nothing in klag_collector/
changes. The package is refactored while the bench is used, so a name that is gone is
skipped and listed (`PATCHES.missing`), and the bench runs on with fewer figures.

Times are time.monotonic(), CLOCK_MONOTONIC on Linux, which the bench's helper processes
share: their samples are classified against the windows recorded here.
"""

from __future__ import annotations

import contextlib
import cProfile
import functools
import importlib
import pstats
import threading
import time
from collections import Counter, defaultdict
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

Window = Tuple[float, float]


class Recorder:
    """Requests by API and time by step, for one cycle (written from several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.request_s: Dict[str, float] = defaultdict(float)
        self.steps: Dict[str, List[float]] = defaultdict(lambda: [0, 0.0])  # calls, seconds
        self.windows: Dict[str, List[Window]] = defaultdict(list)
        # Fetch requests by the broker they went to, and the partitions they asked for
        self.fetch_by_node: Counter[str] = Counter()
        self.fetch_partitions = 0
        # keys handed to Source.fetch_timestamps
        self.fetch_keys = 0

    def request(self, api: str, node: Any, request: Any) -> None:
        with self._lock:
            self.requests[api] += 1
            if api == "FetchRequest":
                self.fetch_by_node[str(node)] += 1
                self.fetch_partitions += fetch_partition_count(request)

    def request_done(self, api: str, seconds: float) -> None:
        with self._lock:
            self.request_s[api] += seconds

    def step(self, name: str, started: float, ended: float) -> None:
        with self._lock:
            entry = self.steps[name]
            entry[0] += 1
            entry[1] += ended - started
            self.windows[name].append((started, ended))

    def keys(self, n: int) -> None:
        with self._lock:
            self.fetch_keys += n

    def step_figures(self) -> Dict[str, Dict[str, float]]:
        return {k: {"calls": v[0], "s": v[1]} for k, v in self.steps.items()}


def fetch_partition_count(request: Any) -> int:
    try:
        return sum(len(topic.partitions) for topic in request.topics)
    except (AttributeError, TypeError):
        return 0


# The recorder of the cycle under way; None between cycles.
CURRENT: Optional[Recorder] = None


class Patches:
    """Which names were wrapped, and which were not found."""

    def __init__(self) -> None:
        self.patched: List[str] = []
        self.missing: List[str] = []


PATCHES = Patches()


def resolve(path: str) -> Tuple[Any, str]:
    """'pkg.module:Class.attr' -> (the object holding attr, 'attr')."""
    module_name, _, attr_path = path.partition(":")
    owner: Any = importlib.import_module(module_name)
    *owners, name = attr_path.split(".")
    for part in owners:
        owner = getattr(owner, part)
    return owner, name


def patch(path: str, make_wrapper: Callable[[Any], Any]) -> bool:
    """Replace the named attribute by make_wrapper(original); note it when it is not there."""
    try:
        owner, name = resolve(path)
        original = getattr(owner, name)
    except (ImportError, AttributeError) as e:
        PATCHES.missing.append(f"{path} ({type(e).__name__}: {e})")
        return False
    setattr(owner, name, make_wrapper(original))
    PATCHES.patched.append(path)
    return True


def patch_instance(obj: Any, what: str, name: str, make_wrapper: Callable[[Any], Any]) -> bool:
    """The same for an attribute of one object (`what` names the object in the report)."""
    original = getattr(obj, name, None) if obj is not None else None
    if original is None:
        PATCHES.missing.append(f"{what}.{name}")
        return False
    setattr(obj, name, make_wrapper(original))
    PATCHES.patched.append(f"{what}.{name}")
    return True


def timed(label: str) -> Callable[[Any], Any]:
    """A wrapper maker: time each call into the current recorder under `label`."""

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rec, started = CURRENT, time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                if rec is not None:
                    rec.step(label, started, time.monotonic())

        return wrapper

    return make


def timed_deferred(label: str) -> Callable[[Any], Any]:
    """Like timed(), for a function returning a Deferred: until the Deferred fires."""

    def make(original: Any) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            rec, started = CURRENT, time.monotonic()

            def done(result: Any) -> Any:
                if rec is not None:
                    rec.step(label, started, time.monotonic())
                return result

            return original(*args, **kwargs).addBoth(done)

        return wrapper

    return make


def counting_fetch_keys(original: Any) -> Any:
    """Source.fetch_timestamps(self, items): count the keys, and time the call."""
    timed_original = timed("source.fetch_timestamps (step 6)")(original)

    @functools.wraps(original)
    def fetch_timestamps(self: Any, items: Any, *args: Any, **kwargs: Any) -> Any:
        rec = CURRENT
        if rec is not None:
            rec.keys(len(items))
        return timed_original(self, items, *args, **kwargs)

    return fetch_timestamps


def counting_requests(original: Any) -> Any:
    """KafkaConnection._send_request: every request of every kafka-python client passes here
    (ApiVersions and SASL at connect included); counted by class name, timed to its answer."""

    def _send_request(self: Any, request: Any, future: Any = None, timeout_at: Any = None) -> Any:
        rec, started = CURRENT, time.monotonic()
        fut = original(self, request, future=future, timeout_at=timeout_at)
        if rec is not None:
            api = type(request).__name__
            rec.request(api, getattr(self, "node_id", None), request)
            fut.add_both(lambda _result: rec.request_done(api, time.monotonic() - started))
        return fut

    return _send_request


# -- the exporter's thread pools -------------------------------------------------------------


class WorkItem(NamedTuple):
    pool: str
    func: str
    queued: float
    started: float
    ended: float


class PoolWork:
    """Work items of the exporter's pools (named klag-*): in flight now, and those done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inflight = 0
        self._done: List[WorkItem] = []
        self.hooked = False

    def queued(self) -> None:
        with self._lock:
            self.inflight += 1

    def finished(self, item: WorkItem) -> None:
        with self._lock:
            self.inflight -= 1
            self._done.append(item)

    def take(self) -> List[WorkItem]:
        """The items done since the last take()."""
        with self._lock:
            done, self._done = self._done, []
        return done


WORK = PoolWork()


def work_name(func: Any) -> str:
    inner = getattr(func, "func", func)  # functools.partial
    return getattr(inner, "__qualname__", None) or type(inner).__name__


def hooked_pool_call(original: Any) -> Any:
    """ThreadPool.callInThreadWithCallback (Twisted's public API, under deferToThreadPool):
    time each work item of the exporter's pools, and profile it while profiling."""

    def callInThreadWithCallback(self: Any, onResult: Any, func: Any, *args: Any,
                                 **kw: Any) -> Any:
        pool = getattr(self, "name", None) or ""
        if not pool.startswith("klag"):
            return original(self, onResult, func, *args, **kw)
        queued = time.monotonic()
        WORK.queued()

        def run(*a: Any, **k: Any) -> Any:
            started = time.monotonic()
            try:
                if not PROFILES.enabled:
                    return func(*a, **k)
                with PROFILES.active():
                    return func(*a, **k)
            finally:
                WORK.finished(WorkItem(pool, work_name(func), queued, started, time.monotonic()))

        return original(self, onResult, run, *args, **kw)

    return callInThreadWithCallback


# -- profiling ------------------------------------------------------------------------------


class ThreadProfiles:
    """One cProfile per thread while enabled, on each thread's CPU time; merged on demand.

    cProfile sees only the thread that enables it, so each work item of the exporter's pools
    and each kafka-python network read enables its thread's profile, and the reactor thread
    enables its own for the profiled cycle. Thread CPU time, not wall time: a thread waiting
    for Kafka or for epoll costs nothing here.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._lock = threading.Lock()
        self._profiles: Dict[int, cProfile.Profile] = {}
        self._local = threading.local()
        self._inside = 0  # threads profiling now

    def _mine(self) -> cProfile.Profile:
        ident = threading.get_ident()
        with self._lock:
            prof = self._profiles.get(ident)
            if prof is None:
                prof = self._profiles[ident] = cProfile.Profile(time.thread_time)
        return prof

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        prof = self._mine()
        self._local.depth = 1
        with self._lock:
            self._inside += 1
        prof.enable()
        try:
            yield
        finally:
            prof.disable()
            self._local.depth = 0
            with self._lock:
                self._inside -= 1

    def start(self) -> None:
        self.enabled = True

    def stop(self) -> Optional[pstats.Stats]:
        """Stop, and merge every thread's profile (None if nothing was profiled)."""
        self.enabled = False
        # A profile is read only once its thread has disabled it (cProfile is per thread).
        deadline = time.monotonic() + 5
        while self._inside and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            profiles, self._profiles = list(self._profiles.values()), {}
        stats: Optional[pstats.Stats] = None
        for prof in profiles:
            prof.create_stats()
            if not prof.stats:
                continue
            if stats is None:
                stats = pstats.Stats(prof)
            else:
                stats.add(prof)
        return stats


PROFILES = ThreadProfiles()


def profiled(original: Any) -> Any:
    """Profile each call in its thread while profiling (kafka-python's network reads)."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not PROFILES.enabled:
            return original(*args, **kwargs)
        with PROFILES.active():
            return original(*args, **kwargs)

    return wrapper


# -- installing -------------------------------------------------------------------------------


def instrument() -> None:
    """Wrap kafka-python's single send path, the blocking calls a cycle makes and the pools."""
    patch("kafka.net.connection:KafkaConnection._send_request", counting_requests)
    patch("kafka.net.connection:KafkaConnection.data_received", profiled)
    WORK.hooked = patch("twisted.python.threadpool:ThreadPool.callInThreadWithCallback",
                        hooked_pool_call)
    patch("kafka.admin:KafkaAdminClient.__init__", timed("admin client connect"))
    for name in ("list_groups", "describe_groups", "list_group_offsets", "describe_topics",
                 "list_partition_offsets", "describe_configs"):
        patch(f"kafka.admin:KafkaAdminClient.{name}", timed(f"admin.{name}"))
    # The timestamp fetch once used a KafkaConsumer (seeks, pauses, end-of-partition checks
    # grew with the partitions of a batch); these show only while something uses one.
    patch("kafka:KafkaConsumer.__init__", timed("consumer connect"))
    for name in ("assign", "seek", "poll", "position", "pause", "close"):
        patch(f"kafka:KafkaConsumer.{name}", timed(f"consumer.{name}"))
    patch("klag_collector.kafka_source:KafkaSource.read", timed("source.read (steps 1-5)"))
    patch("klag_collector.kafka_source:KafkaSource.fetch_timestamps", counting_fetch_keys)
    # The rounds of raw Fetch requests of one batch (kafka_io calls record_fetch.read).
    patch("klag_collector.record_fetch:read", timed("record_fetch.read (Fetch rounds)"))
    # build_snapshot is looked up in the poller module at each cycle.
    patch("klag_collector.poller:build_snapshot", timed("build_snapshot (step 7)"))


def instrument_sampler(sampler: Any) -> None:
    """Time step 6 as the poller sees it, on the poller's sampler instance.

    sample() is the worker-thread plan (cache look-ups, batching by leader), the fan-out of
    batch fetches on the reactor (each runs Source.fetch_timestamps in a worker thread) and
    the worker-thread merge into the cache.
    """
    if sampler is None:
        return
    patch_instance(sampler, "poller.sampler", "sample",
                   timed_deferred("sampler.sample (step 6, total)"))
    patch_instance(sampler, "poller.sampler", "plan", timed("sampler.plan (thread)"))
    patch_instance(sampler, "poller.sampler", "_fetch_all",
                   timed_deferred("sampler fetch fan-out (reactor)"))
    patch_instance(sampler, "poller.sampler", "merge", timed("sampler.merge (thread)"))
