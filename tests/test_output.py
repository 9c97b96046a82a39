"""--once output of names holding control characters: escaped in the table, ASCII in JSON.

Group names, client ids, hosts and group states come from Kafka (anyone allowed to join a
group picks its name), error texts from brokers: printed raw, "\\x1b[2J" would clear the
terminal of whoever runs --once.
"""

from __future__ import annotations

import json
from typing import List

import pytest
from twisted.internet import task

from klag_collector.logs import printable
from klag_collector.model import ClusterData, GroupInfo, Member, ShareGroupInfo, ShareOffset
from klag_collector.output import as_json, as_table
from klag_collector.poller import ClusterPoller
from fakes import FakeSource, pollers_on_clock

T0 = 1_700_000_000.0

CONFIG = """
[exporter]
granularity = "partition"
[exporter.timestamp_sampling]
enabled = false
[[clusters]]
name = "c\\u001b1"
bootstrap_servers = "127.0.0.1:1"
[[clusters]]
name = "down"
bootstrap_servers = "127.0.0.1:2"
"""

EVIL = "evil\x1b[2J"
MEMBER = Member(consumer_id="id\r\n", client_id="cli\u202eent", host="/10.0.0.7\x07")


def evil_data() -> ClusterData:
    """A classic group and a share group with control characters in every name Kafka gives."""
    tp = ("t\x00", 0)
    return ClusterData(
        groups={EVIL: GroupInfo(EVIL, "Stable\x1b]0;x\x07", members=1, assignments={tp: MEMBER})},
        committed={EVIL: {tp: 5}},
        earliest={tp: 0},
        latest={tp: 10},
        leaders={tp: 1},
        share_groups={"sh\x9b": ShareGroupInfo("sh\x9b", "Stable", members=1)},
        share_offsets={"sh\x9b": {tp: ShareOffset(8, lag=2)}},
    )


@pytest.fixture
def pollers() -> List[ClusterPoller]:
    """c\\x1b1 collected from evil_data(); "down" failing with a control character in its error."""
    clock = task.Clock()
    clock.advance(T0)
    down = FakeSource()
    down.error = ConnectionError("refused\x1b[31m")
    _, built = pollers_on_clock(CONFIG, {"c\x1b1": FakeSource(evil_data()), "down": down}, clock)
    for p in built:
        p.poll_now()
    return built


def test_printable_escapes_what_repr_escapes() -> None:
    """Controls (C0, DEL, C1), line breaks, bidi overrides and odd spaces become escapes; the
    rest, accents and all, is left as it is."""
    assert printable("evil\x1b[2J") == "evil\\x1b[2J"
    assert printable("a\tb\nc\rd\x00\x7f\x9b") == "a\\tb\\nc\\rd\\x00\\x7f\\x9b"
    assert printable("pay\u202egnp.exe\u2028\u00a0") == "pay\\u202egnp.exe\\u2028\\xa0"
    assert printable("café-orders_v2 (eu) \\d") == "café-orders_v2 (eu) \\d"


def test_table_shows_escapes_never_raw_control_characters(pollers: List[ClusterPoller]) -> None:
    """Cluster, group, state, topic, consumer id, host and client id: every cell escaped, the
    columns aligned on the escaped text; the failing cluster's note too."""
    assert as_table(pollers).splitlines() == [
        "CLUSTER  GROUP        TYPE     STATE               TOPIC  PARTITION  CURRENT-OFFSET  "
        "LOG-END-OFFSET  LAG  LAG-SECONDS  CONSUMER-ID  HOST           CLIENT-ID",
        r"c\x1b1   evil\x1b[2J  classic  Stable\x1b]0;x\x07  t\x00  0          5               "
        r"10              5    -            id\r\n       /10.0.0.7\x07  cli\u202eent",
        r"c\x1b1   sh\x9b       share    Stable              t\x00  0          8               "
        r"10              2    -            -            -              -",
        r"cluster down: not collected: ConnectionError: refused\x1b[31m",
    ]


def test_json_is_ascii_with_every_name_escaped(pollers: List[ClusterPoller]) -> None:
    """Every character of --format json is printable ASCII or a newline; the names are JSON
    escapes, and a script reading the JSON gets them back exactly."""
    text = as_json(pollers)
    assert all(c == "\n" or " " <= c <= "~" for c in text)
    lines = {line.strip() for line in text.splitlines()}
    assert {
        r'"c\u001b1": {',
        r'"evil\u001b[2J": {',
        r'"client_id": "cli\u202eent",',
        r'"consumer_id": "id\r\n",',
        r'"host": "/10.0.0.7\u0007",',
        r'"topic": "t\u0000"',
        r'"state": "Stable\u001b]0;x\u0007",',
        r'"sh\u009b": {',
        r'"error": "ConnectionError: refused\u001b[31m",',
    } <= lines
    doc = json.loads(text)
    group = doc["clusters"]["c\x1b1"]["groups"][EVIL]
    assert (group["state"], group["partitions"][0]["host"]) == ("Stable\x1b]0;x\x07", MEMBER.host)
    assert doc["clusters"]["down"]["error"] == "ConnectionError: refused\x1b[31m"
