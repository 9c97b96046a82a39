"""The Java group driver (devtools/java/GroupDriver.java): compiled once, run as a process.

kafka-python cannot join a consumer group of the KIP-848 protocol (group.protocol=consumer);
the Java client can. The driver is compiled with the machine's JDK against the kafka-clients
jar of the broker's jar cache (devtools.localkafka.fetch_jars()), and the classes are cached
there, keyed by a hash of the source.
"""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from devtools import localkafka

SOURCE = pathlib.Path(__file__).parent / "java" / "GroupDriver.java"
# The share consumer (KIP-932): KafkaShareConsumer, in kafka-clients 4.1+.
SHARE_SOURCE = SOURCE.with_name("ShareDriver.java")


class JavaDriverError(RuntimeError):
    """No JDK, or the driver did not compile."""


# The streams application (KIP-1071, group.protocol=streams): Kafka Streams 4.1+.
STREAMS_SOURCE = SOURCE.with_name("StreamsDriver.java")
_CLIENT_JARS = ("kafka-clients-", "slf4j-", "lz4-", "snappy-", "zstd-")
_STREAMS_JARS = ("kafka-streams-", "jackson-")


def classpath(jars: pathlib.Path, source: pathlib.Path = SOURCE) -> str:
    """kafka-clients and what it needs at run time (and kafka-streams for the streams
    driver), from the broker's jar folder."""
    wanted = _CLIENT_JARS + (_STREAMS_JARS if source == STREAMS_SOURCE else ())
    names = sorted(str(p) for p in jars.glob("*.jar") if p.name.startswith(wanted)
                   and not p.name.startswith("kafka-streams-test-utils"))
    return ":".join(names)


def compiled(version: Optional[str] = None, source: pathlib.Path = SOURCE) -> str:
    """The classpath to run a driver with, compiling it first if its classes are not cached."""
    jars = localkafka.fetch_jars(version)
    cp = classpath(jars, source)
    digest = hashlib.sha256(source.read_bytes() + cp.encode()).hexdigest()[:16]
    out = jars / "klag-java-driver" / digest
    if not (out / (source.stem + ".class")).exists():
        javac = shutil.which("javac")
        if javac is None:
            raise JavaDriverError("javac not found on PATH: a JDK 17+ is needed")
        tmp = out.with_name(digest + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc = subprocess.run([javac, "-d", str(tmp), "-cp", cp, str(source)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode:
            raise JavaDriverError("javac failed:\n" + proc.stdout + proc.stderr)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return f"{out}:{cp}"


class _Driver:
    """A Java driver process: started with its arguments, told to leave by closing stdin."""

    def __init__(self, classpath: str, main_class: str, args: List[str]) -> None:
        java = shutil.which("java")
        if java is None:
            raise JavaDriverError("java not found on PATH")
        self.proc = subprocess.Popen([java, "-cp", classpath, main_class, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)

    def _lines(self, until: str) -> Iterator[str]:
        """The driver's lines up to the one starting with *until* (not given); an ERROR line
        or the end of its output first is a JavaDriverError."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(until):
                return
            if line.startswith("ERROR"):
                break
            yield line
        raise JavaDriverError(f"driver ended before {until} (rc={self.proc.poll()})")

    def close(self, timeout: float = 30) -> int:
        """Close stdin, so the driver leaves the group and exits; kill it if it does not."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


class GroupDriver(_Driver):
    """One running driver: a consumer-protocol member of `group` on `topic`.

    With `rate`, it consumes the topic (at most `rate` records a second) and commits as it
    goes, until closed; without, it commits `offsets` and reads nothing.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, client_id: str,
                 offsets: Mapping[int, int], version: Optional[str] = None, *,
                 rate: Optional[int] = None) -> None:
        paced = [f"rate={max(1, int(rate))}"] if rate else []
        super().__init__(compiled(version), "GroupDriver", [
            bootstrap, group, topic, client_id, *paced,
            *[f"{p}={o}" for p, o in sorted(offsets.items())]])
        self.member_id = ""

    def wait_ready(self) -> str:
        """Block until the driver has its assignment and committed; return its member id."""
        for line in self._lines("ASSIGNED "):
            if line.startswith("MEMBER "):
                self.member_id = line.split(" ", 1)[1].strip()
        return self.member_id



class ShareDriver(_Driver):
    """One running share consumer (KafkaShareConsumer) of share group `group` on `topic`.

    It accepts the records of offset < `accept` and releases the others it is given, until
    it has accepted `count`, so each share-partition's start offset stops at `accept` (or
    its end) (see devtools/java/ShareDriver.java). With `rate`, it accepts every record
    it is given instead, at most `rate` a second, until closed (wait_ready then returns {}).
    """

    def __init__(self, bootstrap: str, group: str, topic: str, client_id: str, accept: int = 0,
                 count: int = 0, version: Optional[str] = None, *,
                 rate: Optional[int] = None) -> None:
        args = [f"rate={max(1, int(rate))}"] if rate else [str(accept), str(count)]
        super().__init__(compiled(version, SHARE_SOURCE), "ShareDriver", [
            bootstrap, group, topic, client_id, *args])
        # partition -> (start offset, lag or None), as Admin.listShareGroupOffsets said
        self.start: Dict[int, Tuple[int, Optional[int]]] = {}

    def wait_ready(self) -> Dict[int, Tuple[int, Optional[int]]]:
        """Block until the records are acknowledged; return what the broker says of them."""
        for line in self._lines("READY"):
            if line.startswith("START "):
                partition, rest = line.split(" ", 1)[1].split("=", 1)
                offset, lag = rest.split()
                self.start[int(partition)] = (int(offset), None if lag == "-" else int(lag))
        return self.start


class StreamsDriver(_Driver):
    """One running Kafka Streams application (group.protocol=streams) reading `topic` as
    streams group `group` (its application.id): it processes every record and commits every
    100 ms until paused or closed (see devtools/java/StreamsDriver.java)."""

    def __init__(self, bootstrap: str, group: str, topic: str, client_id: str,
                 version: Optional[str] = None) -> None:
        super().__init__(compiled(version, STREAMS_SOURCE), "StreamsDriver",
                         [bootstrap, group, topic, client_id])
        # member id -> (client id, host), as Admin.describeStreamsGroups told it
        self.members: Dict[str, Tuple[str, str]] = {}

    def wait_ready(self) -> Dict[str, Tuple[str, str]]:
        """Block until the application runs with its tasks assigned; return its members."""
        for line in self._lines("READY"):
            if line.startswith("MEMBER "):
                member_id, client_id, host = line.split()[1:4]
                self.members[member_id] = (client_id, host.lstrip("/"))
        return self.members

    def pause(self) -> None:
        """Stop processing (the member stays in the group) once its progress is committed."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("pause\n")
        self.proc.stdin.flush()
        for _line in self._lines("PAUSED"):
            pass

