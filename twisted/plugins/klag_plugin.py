from twisted.application.service import ServiceMaker

klag = ServiceMaker(
    "klag-collector",
    "klag_collector.tap",
    "Kafka consumer-group lag exporter for Prometheus",
    "klag",
)
