"""Hostile config text: one one-line ConfigError, no secret in it, nothing else (README,
"Configuration").

Generated inputs: valid TOML and YAML configs with secrets in them (written in the file and
substituted from the environment) that are then mutated (cut, spliced, with hostile snippets
inserted: deep nesting, huge numbers, YAML tags, anchors and aliases around a secret), and random
text and bytes. Loading each either succeeds or raises exactly one ConfigError whose message is
one line and holds no secret; any other exception fails the test. Key paths name keys: a secret
that the mutations turned into a key (``Q7secretclusters:``) may show in one, and only then.
The CLI test runs the worst cases through `--check`: exit status 2 (systemd's
RestartPreventExitStatus=2) and one line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klag_collector.config import load_config, parse_config
from klag_collector.config_reader import MAX_DEPTH, MAX_DIGITS
from klag_collector.envsubst import interpolate
from klag_collector.errors import ConfigError

from test_cli import klag, write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Mutated patterns such as "[[a]" are regular expressions re warns about; they still compile.
pytestmark = pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")

# A few thousand cases in all, in well under 20 s on a slow 2-core machine.
FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TOML_BASE = """\
[exporter]
poll_interval = "30s"
http_port = 8000
granularity = "topic"
# a commented-out ${KLAG_FUZZ_UNSET}

[exporter.timestamp_sampling]
enabled = true
cache_ttl = "60s"

[[clusters]]
name = "prod"
bootstrap_servers = "kafka-1:9092,kafka-2:9092"
group_whitelist = [".*", "^orders-"]
topic_blacklist = ["^__.*"]

[clusters.consumer_properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "${KLAG_FUZZ_USER}"
"sasl.password" = SECRET

[clusters.labels]
environment = "${KLAG_FUZZ_LABEL}"
team = 'payments'
"""

YAML_BASE = """\
exporter:
  poll_interval: 30s
  http_port: 8000
  granularity: topic
  # a commented-out ${KLAG_FUZZ_UNSET}
  timestamp_sampling:
    enabled: true
    cache_ttl: 60s
clusters:
  - name: prod
    bootstrap_servers: kafka-1:9092,kafka-2:9092
    group_whitelist: [".*", "^orders-"]
    topic_blacklist:
      - ^__.*
    consumer_properties:
      security.protocol: SASL_SSL
      sasl.mechanism: SCRAM-SHA-512
      sasl.username: "${KLAG_FUZZ_USER}"
      sasl.password: SECRET
    labels:
      environment: ${KLAG_FUZZ_LABEL}
      team: 'payments'
"""
BASES = {"toml": TOML_BASE, "yaml": YAML_BASE}

# Printable text of any script, with the characters that matter to TOML, YAML and ${...}.
SECRET_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp"))
    | st.sampled_from("\"'\\$#{}[],:*&!|>%@`=- "),
    min_size=3,
    max_size=12,
)
# Marked at both ends, so that no message can hold one by chance.
SECRETS = SECRET_TEXT.map(lambda text: f"Q7{text}z")
PLAIN_SECRETS = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=3, max_size=12).map(
    lambda text: f"Q7{text}z"
)


class Case(NamedTuple):
    """A config text with the secrets placed in it and in its environment."""

    fmt: str
    text: str
    environ: Dict[str, str]
    secrets: List[str]


@st.composite
def valid_cases(draw: st.DrawFn, fmt: str, bare_secret: bool = False) -> Case:
    """A base config: the password in the file, the user and a label from the environment."""
    password, user = draw(SECRETS), draw(SECRETS)
    label = draw(SECRETS if bare_secret else PLAIN_SECRETS)
    environ = {
        "KLAG_FUZZ_USER": user, "KLAG_FUZZ_LABEL": label, "KLAG_FUZZ_PASSWORD": draw(SECRETS),
    }
    text = BASES[fmt].replace("SECRET", json.dumps(password, ensure_ascii=False))
    return Case(fmt, text, environ, [password, *environ.values()])


def hostile_values(secret: str) -> st.SearchStrategy[str]:
    """Values that once showed the secret they hold (in an error, or a traceback), and random
    tags, anchors and aliases. A reference stays out of keys: the text it stands for would
    then be a key, which errors name."""
    env = "${KLAG_FUZZ_PASSWORD}"
    known = [
        f"*{secret}", f"&{secret} x", f"!{secret} x", f"!<{secret}> x", f"!!int {secret}",
        f"!!float {secret}", f"!!timestamp {secret}", f"!!binary {secret}", f'"{secret}',
        f"'{secret}", f"*{env}", f"&{env} x", f"!{env} x", f"!!int {env}", f"!!float {env}",
        f"!!timestamp {env}", f'"{env}"', env, f"[{env}]", f"{{a: {env}}}", f"{{a = {env}}}",
        "${KLAG_FUZZ_PASSWORD:-x}", "'${KLAG_FUZZ_PASSWORD}'", "[1, ${KLAG_FUZZ_PASSWORD}]",
    ]
    marks = st.sampled_from(["!", "!!", "&", "*", "!<", "!e!", "!!int ", "!!str ", "!!map "])
    names = st.sampled_from([secret, env]) | st.text(max_size=10)
    after = st.sampled_from(["", " x", " 1", " {}", " []", ">", " *a"])
    return st.sampled_from(known) | st.builds("{}{}{}".format, marks, names, after)


# Text that once crashed the loader, hung it, or slipped through it.
HOSTILE = [
    "[" * 200, "]" * 3, "{a = " * 100, "{a: " * 100, "- " * 200, "? " * 100, "a." * 200,
    "\n" + "  " * 100 + "a:", "9" * 5000, "-" + "9" * 4400, "1:" * 3000 + "1", "1e999",
    "0x" + "f" * 5000, '"' + "9" * 400 + 's"', '"1' + "0" * 5000 + 'ms"', "2001-13-45",
    "2001-02-03 25:61:61", "1979-05-27T07:32:00+25:00", "!!int ", "!!float ", "!!timestamp ",
    "!!binary ", "!!python/object:os.system ", "!x ", "&a ", "*a", "<<: *a", "<<: {x: 1}",
    "%TAG ! tag:x,2000:\n", "%YAML 1.1\n---\n", "---\n", "...\n", "\t", "\x00", "\x1b",
    "\x7f", "\x85", "\u2028", "\ufeff", '"""', "'''", "\\", "\\u00", "#", ",", ":", "=",
    "${", "$${", "${KLAG_FUZZ_UNSET}", "${KLAG_FUZZ_PASSWORD:-x}", "${?X}", "${?X:-}",
    '"\\U0011ffff"',
    "inf", "nan", "-0", "+", "\n[exporter]\n", "\n[[clusters]]\n",
]
# Where a value starts: a hostile value replaces the rest of its line there.
VALUE_START = re.compile(r"(?<=[:=-] )")
MUTATIONS = 4


@st.composite
def mutated_cases(draw: st.DrawFn, fmt: str) -> Case:
    """A base config after a few cuts, splices, insertions and hostile values."""
    case = draw(valid_cases(fmt, bare_secret=draw(st.booleans())))
    text = case.text
    hostile = hostile_values(draw(st.sampled_from(case.secrets[:1]) | SECRETS))
    for _ in range(draw(st.integers(1, MUTATIONS))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        kind = draw(st.sampled_from(("cut", "truncate", "splice", "insert", "replace", "value")))
        if kind == "cut":
            text = text[:start] + text[end:]
        elif kind == "truncate":
            text = text[:start]
        elif kind == "splice":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + text[start:end] + text[at:]
        elif kind == "value":
            at = draw(st.sampled_from([m.start() for m in VALUE_START.finditer(text)] or [0]))
            eol = text.find("\n", at)
            text = text[:at] + draw(hostile) + (text[eol:] if eol >= 0 else "")
        else:
            new = draw(st.sampled_from(HOSTILE) | st.text(max_size=8) | hostile)
            text = text[:start] + new + (text[end:] if kind == "replace" else text[start:])
    return Case(fmt, text, case.environ, case.secrets)


def outcome(case: Case) -> None:
    """Load *case*: it loads, or fails with one ConfigError of one line that shows no secret,
    unless the mutations made that secret (part of) a key: key paths show keys."""
    try:
        parse_config(case.text, f"fuzz.{case.fmt}", case.fmt, case.environ)
    except ConfigError as error:
        message = str(error)
        assert_one_line(message)
        shown = [s for s in case.secrets if s in message or repr(s)[1:-1] in message]
        if shown:
            keys = keys_of(case) + "\n" + "\n".join(TOML_NAMED_KEYS.findall(error.reason))
            assert all(s in keys or repr(s)[1:-1] in keys for s in shown), (shown, message)


def assert_one_line(message: str) -> None:
    assert len(message.splitlines()) == 1 and "\n" not in message, message


def assert_clean(message: str, secrets: List[str]) -> None:
    """*message* is one line, and shows none of *secrets*."""
    assert_one_line(message)
    for secret in secrets:
        assert secret not in message and repr(secret)[1:-1] not in message, (secret, message)


# tomllib's messages that name keys (as a tuple's repr, or one key's).
TOML_NAMED_KEYS = re.compile(
    r"(?:Cannot declare|Cannot mutate immutable namespace|Cannot redefine namespace"
    r"|Duplicate inline table key) (.*)"
)


def keys_of(case: Case) -> str:
    """The keys in *case*'s text as its parser reads them (YAML: up to its first error), one a
    line. Key paths may show these."""
    try:
        text = interpolate(case.text, case.environ, case.fmt, "keys")
    except ConfigError:
        return ""
    if case.fmt == "toml":
        try:
            nodes = [tomllib.loads(text)]
        except Exception:  # what the loader refused before tomllib could fail on it
            return ""
        keys: List[str] = []
        while nodes:
            node = nodes.pop()
            if isinstance(node, dict):
                keys.extend(node)
                nodes.extend(node.values())
            elif isinstance(node, list):
                nodes.extend(node)
        return "\n".join(keys)
    return "\n".join(yaml_keys(text))


def yaml_keys(text: str) -> List[str]:
    """The scalars in key position, read from the event stream: no alias, tag or depth stops it."""
    keys: List[str] = []
    # Per open collection: True for a mapping awaiting a key, False awaiting a value, None a list.
    awaiting: List[Optional[bool]] = []
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.CollectionEndEvent)):
                awaiting.pop()
            elif isinstance(event, yaml.NodeEvent):
                if awaiting and awaiting[-1] is not None:
                    if awaiting[-1] and isinstance(event, yaml.ScalarEvent):
                        keys.append(event.value)
                    awaiting[-1] = not awaiting[-1]
                if isinstance(event, yaml.MappingStartEvent):
                    awaiting.append(True)
                elif isinstance(event, yaml.SequenceStartEvent):
                    awaiting.append(None)
    except yaml.YAMLError:
        pass
    return keys


@pytest.mark.parametrize("fmt", sorted(BASES))
@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_the_base_configs_load_with_their_secrets(fmt: str, data: st.DataObject) -> None:
    """The configs the mutations start from are valid and keep each secret exactly: the
    fuzzing starts from real configs, not from text that fails on its first line."""
    case = data.draw(valid_cases(fmt))
    config = parse_config(case.text, f"fuzz.{fmt}", fmt, case.environ)
    (cluster,) = config.clusters
    assert cluster.kafka_args["sasl_plain_password"] == case.secrets[0]
    assert cluster.kafka_args["sasl_plain_username"] == case.environ["KLAG_FUZZ_USER"]
    assert dict(cluster.labels) == {
        "environment": case.environ["KLAG_FUZZ_LABEL"], "team": "payments",
    }


@pytest.mark.parametrize("fmt", sorted(BASES))
@FUZZ
@given(data=st.data())
def test_mutated_configs_fail_cleanly(fmt: str, data: st.DataObject) -> None:
    """Every mutation of a valid config loads or is one ConfigError: one line, no secret."""
    outcome(data.draw(mutated_cases(fmt)))


@pytest.mark.parametrize("fmt", sorted(BASES))
@settings(FUZZ, max_examples=300)
@given(text=st.text(max_size=300), secret=SECRETS, quote=st.sampled_from(["", '"', "'"]))
def test_random_text_fails_cleanly(fmt: str, text: str, secret: str, quote: str) -> None:
    """Random Unicode around a reference to a secret in the environment is one ConfigError of
    one line without the secret."""
    cut = len(text) // 2
    text = f"{text[:cut]}{quote}${{KLAG_FUZZ_PASSWORD}}{quote}{text[cut:]}"
    outcome(Case(fmt, text, {"KLAG_FUZZ_PASSWORD": secret}, [secret]))


# Nesting levels, in the order they may nest (YAML's block sequences hold flow collections,
# not the other way round).
LEVELS = {
    "toml": [("[", "]"), ("{a = ", "}"), ("[1, ", ", 2]")],
    "yaml": [("- ", ""), ("[", "]"), ("{a: ", "}"), ("[1, ", ", 2]")],
}


@st.composite
def nested_values(draw: st.DrawFn, fmt: str) -> Tuple[int, str]:
    """How deep, and a value that deep: lists and tables in random order, closed or not."""
    levels = draw(st.lists(st.sampled_from(LEVELS[fmt]), min_size=1, max_size=150))
    levels.sort(key=LEVELS[fmt].index)
    inner = draw(st.sampled_from(["1", '"x"', "", '"${KLAG_FUZZ_PASSWORD}"', "*a", "!!int x"]))
    closed = draw(st.integers(0, len(levels)))  # the innermost levels that are closed
    opening = "".join(start for start, _ in levels)
    closing = "".join(end for _, end in reversed(levels[len(levels) - closed:]))
    block = "\n    " if fmt == "yaml" and opening.startswith("- ") else ""
    return len(levels), block + opening + inner + closing


@pytest.mark.parametrize("fmt", sorted(BASES))
@settings(FUZZ, max_examples=200)
@given(data=st.data(), secret=SECRETS)
def test_random_nesting_fails_cleanly(fmt: str, data: st.DataObject, secret: str) -> None:
    """A value nested at random is one clean ConfigError (http_port takes no list or table);
    past the depth limit, the error is that limit, whatever the rest of the text."""
    depth, value = data.draw(nested_values(fmt))
    key = {"toml": "http_port = 8000", "yaml": "http_port: 8000"}[fmt]
    text = BASES[fmt].replace("SECRET", '"x"').replace(key, key[:-4] + value)
    with pytest.raises(ConfigError) as info:
        parse_config(text, f"fuzz.{fmt}", fmt, {"KLAG_FUZZ_USER": "u", "KLAG_FUZZ_LABEL": "l",
                                                "KLAG_FUZZ_PASSWORD": secret})
    assert_clean(str(info.value), [secret])
    if depth > MAX_DEPTH + 2:
        assert info.value.reason == f"nested more than {MAX_DEPTH} levels deep"


DIGITS = st.text("0123456789", min_size=1, max_size=30) | st.integers(90, 6000).map("7".__mul__)
# Lines of the base configs, with a number or a duration to replace.
NUMBER_LINES = {
    "toml": ["http_port = {}", 'poll_interval = "{}s"', 'cache_ttl = "{}ms"'],
    "yaml": ["http_port: {}", "poll_interval: {}s", 'cache_ttl: "{}ms"'],
}


@pytest.mark.parametrize("fmt", sorted(BASES))
@settings(FUZZ, max_examples=200)
@given(data=st.data(), digits=DIGITS)
def test_huge_numbers_fail_cleanly(fmt: str, data: st.DataObject, digits: str) -> None:
    """Numbers and durations of any length load or are one clean ConfigError; past the digit
    limits (100 for numbers, 20 for durations) they never load."""
    sign = data.draw(st.sampled_from(["", "-", "+"]))
    tail = data.draw(st.sampled_from(["", ".5", "e999", "_1", ":30", "0" * 10]))
    line = data.draw(st.sampled_from(NUMBER_LINES[fmt])).format(sign + digits + tail)
    key = line.split()[0].rstrip(":")
    text = re.sub(rf"(?m)^(\s*){key}\b.*$", lambda m: m.group(1) + line, BASES[fmt], count=1)
    text = text.replace("SECRET", '"x"')
    environ = {"KLAG_FUZZ_USER": "u", "KLAG_FUZZ_LABEL": "l"}
    try:
        parse_config(text, f"fuzz.{fmt}", fmt, environ)
    except ConfigError as error:
        assert_clean(str(error), [])
    else:
        assert len(digits) <= (20 if "s" in line.split()[-1] else MAX_DIGITS), line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("name", ["bytes.toml", "bytes.yaml"])
@settings(FUZZ, max_examples=200)
@given(data=st.binary(max_size=300))
def test_random_bytes_in_a_file_fail_cleanly(workdir: str, name: str, data: bytes) -> None:
    """A file of random bytes (UTF-8 or not) is one ConfigError of one line."""
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert_clean(str(info.value), [])


# The worst inputs of the issue: file name, text, environment, and the message after the path.
PASSWORD = "hunter2-Q7z"
WORST: Dict[str, Tuple[str, str, Dict[str, str], str]] = {
    "yaml alias of a password": (
        "klag.yaml", "clusters:\n  - name: c\n    bootstrap_servers: *${KAFKA_PASSWORD}\n",
        {"KAFKA_PASSWORD": PASSWORD},
        "clusters[0].bootstrap_servers: YAML aliases (*name) are not allowed; write the value out",
    ),
    "yaml alias of a password with syntax in it": (
        "klag.yaml", "clusters:\n  - name: c\n    bootstrap_servers: *${KAFKA_PASSWORD}\n",
        {"KAFKA_PASSWORD": PASSWORD + ": {x"}, "line 3: the value of KAFKA_PASSWORD would change "
        "the file's structure in unquoted text; put the reference in double quotes",
    ),
    "yaml alias": (
        "klag.yaml", f"clusters:\n  - name: c\n    bootstrap_servers: *{PASSWORD[:7]}\n", {},
        "clusters[0].bootstrap_servers: YAML aliases (*name) are not allowed; write the value out",
    ),
    "yaml !!int of a password": (
        "klag.yaml", f"exporter:\n  http_port: !!int {PASSWORD}\n", {},
        "exporter.http_port: YAML tags (!name, !!int, ...) are not allowed; write the plain value",
    ),
    "yaml tag of a password": (
        "klag.yaml", f"exporter:\n  http_port: !{PASSWORD} 1\n", {},
        "exporter.http_port: YAML tags (!name, !!int, ...) are not allowed; write the plain value",
    ),
    "yaml 10000 deep": (
        "klag.yaml", "a: " + "[" * 10000 + "]" * 10000 + "\n", {},
        "line 1, column 67: nested more than 64 levels deep",
    ),
    "toml 500 deep": (
        "klag.toml", "a = " + "[" * 500 + "]" * 500 + "\n", {},
        "line 1, column 69: nested more than 64 levels deep",
    ),
    "toml 5000-digit integer": (
        "klag.toml", "[exporter]\nhttp_port = " + "9" * 5000 + "\n", {},
        "line 2, column 13: a number of more than 100 digits",
    ),
    "toml 400-digit duration": (
        "klag.toml", '[exporter]\npoll_interval = "' + "9" * 400 + 's"\n', {},
        "exporter.poll_interval: bad duration: has a number of more than 20 digits",
    ),
}


@pytest.mark.subprocess
@pytest.mark.parametrize("kind", sorted(WORST))
def test_the_worst_inputs_exit_2_with_one_line(
    tmp_path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Each is `klag-collector --check`: exit 2, one line on stderr, no traceback, no secret."""
    name, text, environ, message = WORST[kind]
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    path = write(tmp_path, text, name)
    run = klag("-c", path, "--check")
    assert (run.code, run.out, run.err) == (2, "", f"klag-collector: {path}: {message}\n")
    assert PASSWORD not in run.err
