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
from typing import Dict, List, Mapping, Optional, Tuple

from devtools import localkafka

SOURCE = pathlib.Path(__file__).parent / "java" / "GroupDriver.java"
# The share consumer (KIP-932): KafkaShareConsumer, in kafka-clients 4.1+.
SHARE_SOURCE = SOURCE.with_name("ShareDriver.java")


class JavaDriverError(RuntimeError):
    """No JDK, or the driver did not compile."""


def classpath(jars: pathlib.Path) -> str:
    """kafka-clients and what it needs at run time, from the broker's jar folder."""
    names = sorted(str(p) for p in jars.glob("*.jar")
                   if p.name.startswith(("kafka-clients-", "slf4j-", "lz4-", "snappy-", "zstd-")))
    return ":".join(names)


def compiled(version: Optional[str] = None, source: pathlib.Path = SOURCE) -> str:
    """The classpath to run a driver with, compiling it first if its classes are not cached."""
    jars = localkafka.fetch_jars(version)
    cp = classpath(jars)
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
        self.assigned = ""

    def wait_ready(self) -> str:
        """Block until the driver has its assignment and committed; return its member id."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("MEMBER "):
                self.member_id = line.split(" ", 1)[1].strip()
            elif line.startswith("ASSIGNED "):
                self.assigned = line.split(" ", 1)[1].strip()
                return self.member_id
            elif line.startswith("ERROR"):
                break
        raise JavaDriverError(f"driver ended before it was ready (rc={self.proc.poll()})")



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
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("START "):
                partition, rest = line.split(" ", 1)[1].split("=", 1)
                offset, lag = rest.split()
                self.start[int(partition)] = (int(offset), None if lag == "-" else int(lag))
            elif line.startswith("READY"):
                return self.start
            elif line.startswith("ERROR"):
                break
        raise JavaDriverError(f"driver ended before it was ready (rc={self.proc.poll()})")

