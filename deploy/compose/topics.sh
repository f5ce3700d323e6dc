#!/bin/bash
# Declare every topic mmbroker uses: replication 3, min.insync.replicas 2, no unclean election.
set -euo pipefail
BOOTSTRAP=kafka-1:9092,kafka-2:9092,kafka-3:9092
TOPICS=(
  mmbroker.alerts:6            # listen -> match announcements
  mmbroker.voevent:3           # published VOEvent XML
  mmbroker.voevent.json:3      # the same as JSON
  km3net.triggers:3            # the detector's own triggers (when they come over Kafka)
)
# The brokers may still be electing a controller: wait (up to 2 min) until they answer.
for _ in $(seq 60); do
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1 && break
  sleep 2
done
for entry in "${TOPICS[@]}"; do
  topic=${entry%%:*}; partitions=${entry##*:}
  /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$partitions" --replication-factor 3 \
    --config min.insync.replicas=2 --config unclean.leader.election.enable=false
done
