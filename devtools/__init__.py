"""Development tools, not shipped in the wheel: a local Apache Kafka, demo traffic and the demo.

Run from the repository root: `python -m devtools.localkafka`, `python -m devtools.demo`.
"""
