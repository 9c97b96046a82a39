// A consumer of the KIP-848 protocol (group.protocol=consumer), for tests: kafka-python cannot
// join such a group. Usage:
//   GroupDriver <bootstrap> <group> <topic> <client-id> [<partition>=<offset> ...]
// Subscribes to the topic, polls until it has an assignment, commits the given offsets
// (commitSync with a map), prints "MEMBER <member id>" and "ASSIGNED <partitions>", then
// keeps polling until stdin closes (or a signal), and closes, leaving the group.
//   GroupDriver <bootstrap> <group> <topic> <client-id> rate=<n>
// The paced mode (the demo's consumer): consumes the topic from its committed offsets (else
// the earliest), at most <n> records a second, committing after each batch (commitSync),
// prints "MEMBER" and "ASSIGNED" once it has an assignment, and goes on until stdin closes.
import java.io.InputStream;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class GroupDriver {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], group = args[1], topic = args[2], clientId = args[3];
        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
        long rate = 0;
        if (args.length > 4 && args[4].startsWith("rate=")) {
            rate = Math.max(1, Long.parseLong(args[4].substring(5)));
        }
        for (int i = rate > 0 ? 5 : 4; i < args.length; i++) {
            String[] kv = args[i].split("=");
            offsets.put(new TopicPartition(topic, Integer.parseInt(kv[0])),
                        new OffsetAndMetadata(Long.parseLong(kv[1])));
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", group);
        props.put("client.id", clientId);
        props.put("group.protocol", "consumer");
        props.put("enable.auto.commit", "false");
        props.put("auto.offset.reset", "earliest");
        // Read nothing: the committed offsets are the test's, not the consumer's progress.
        props.put("max.poll.records", rate > 0 ? String.valueOf(Math.min(rate, 500)) : "1");
        props.put("metadata.max.age.ms", "1000");
        AtomicBoolean stop = new AtomicBoolean(false);
        Thread watcher = new Thread(() -> {
            try {
                InputStream in = System.in;
                while (in.read() >= 0) { }
            } catch (Exception e) { }
            stop.set(true);
        });
        watcher.setDaemon(true);
        watcher.start();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(
                props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(List.of(topic));
            if (rate > 0) {
                paced(consumer, rate, stop);
                System.out.println("CLOSED");
                System.out.flush();
                return;
            }
            long deadline = System.currentTimeMillis() + 60_000;
            while (consumer.assignment().isEmpty() && !stop.get()) {
                if (System.currentTimeMillis() > deadline) {
                    System.out.println("ERROR no assignment");
                    System.exit(2);
                }
                consumer.poll(Duration.ofMillis(200));
            }
            consumer.pause(consumer.assignment());
            if (!offsets.isEmpty()) {
                consumer.commitSync(offsets);
            }
            System.out.println("MEMBER " + consumer.groupMetadata().memberId());
            System.out.println("ASSIGNED " + consumer.assignment());
            System.out.flush();
            while (!stop.get()) {
                consumer.poll(Duration.ofMillis(200));
            }
        }
        System.out.println("CLOSED");
        System.out.flush();
    }

    private static void paced(KafkaConsumer<byte[], byte[]> consumer, long rate, AtomicBoolean stop)
            throws InterruptedException {
        boolean announced = false;
        long start = System.currentTimeMillis(), consumed = 0;
        while (!stop.get()) {
            ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
            if (!announced && !consumer.assignment().isEmpty()) {
                System.out.println("MEMBER " + consumer.groupMetadata().memberId());
                System.out.println("ASSIGNED " + consumer.assignment());
                System.out.flush();
                announced = true;
            }
            if (records.isEmpty()) {
                // Idle time does not bank credit for a later burst.
                start = System.currentTimeMillis();
                consumed = 0;
                continue;
            }
            consumer.commitSync();
            consumed += records.count();
            // "Processing": no more than `rate` records a second on average.
            long due = start + consumed * 1000 / rate;
            while (!stop.get() && System.currentTimeMillis() < due) {
                Thread.sleep(Math.min(100, Math.max(1, due - System.currentTimeMillis())));
            }
        }
    }
}
