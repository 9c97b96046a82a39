// A share consumer (KIP-932, KafkaShareConsumer) for tests: kafka-python has none. Usage:
//   ShareDriver <bootstrap> <group> <topic> <client-id> <accept> <count>
// Sets the group's share.auto.offset.reset to earliest, subscribes, and acknowledges the
// records of offset < <accept> with ACCEPT and every other one delivered with RELEASE (so it
// is available again and the start offset stops at <accept>), then commits. Prints
// "ACCEPTED <n>" once <count> records are accepted, then what the broker says
// (Admin.listShareGroupOffsets):
// "START <partition>=<start offset> <lag or ->" per partition, and "READY". Then waits, no
// longer polling (nothing is in flight), until stdin closes, and closes, leaving the group.
//   ShareDriver <bootstrap> <group> <topic> <client-id> rate=<n>
// The paced mode (the demo's share consumer): accepts every record delivered, at most <n> a
// second, committing the acknowledgements after each batch; prints "READY" once it has been
// given records (or after 10 s without any), and goes on until stdin closes.
import java.io.InputStream;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.SharePartitionOffsetInfo;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class ShareDriver {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], group = args[1], topic = args[2], clientId = args[3];
        long rate = args[4].startsWith("rate=") ? Math.max(1, Long.parseLong(args[4].substring(5))) : 0;
        long accept = rate > 0 ? 0 : Long.parseLong(args[4]);
        long count = rate > 0 ? 0 : Long.parseLong(args[5]);
        Properties adminProps = new Properties();
        adminProps.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(adminProps)) {
            ConfigResource resource = new ConfigResource(ConfigResource.Type.GROUP, group);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(new AlterConfigOp(
                    new ConfigEntry("share.auto.offset.reset", "earliest"),
                    AlterConfigOp.OpType.SET)))).all().get(30, TimeUnit.SECONDS);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("group.id", group);
        props.put("client.id", clientId);
        props.put("share.acknowledgement.mode", "explicit");
        props.put("metadata.max.age.ms", "1000");
        if (rate > 0) {
            props.put("max.poll.records", String.valueOf(Math.min(rate, 500)));
        }
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
        try (KafkaShareConsumer<byte[], byte[]> consumer = new KafkaShareConsumer<>(
                props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            consumer.subscribe(List.of(topic));
            if (rate > 0) {
                paced(consumer, rate, stop);
                System.out.println("CLOSED");
                System.out.flush();
                return;
            }
            long accepted = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (accepted < count && !stop.get()) {
                if (System.currentTimeMillis() > deadline) {
                    System.out.println("ERROR accepted only " + accepted);
                    System.out.flush();
                    System.exit(2);
                }
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    if (r.offset() < accept) {
                        consumer.acknowledge(r, AcknowledgeType.ACCEPT);
                        accepted++;
                    } else {
                        consumer.acknowledge(r, AcknowledgeType.RELEASE);
                    }
                }
                if (!records.isEmpty()) {
                    consumer.commitSync();
                }
            }
            System.out.println("ACCEPTED " + accepted);
            try (Admin admin = Admin.create(adminProps)) {
                Map<TopicPartition, SharePartitionOffsetInfo> offsets = admin
                        .listShareGroupOffsets(Map.of(group, new ListShareGroupOffsetsSpec()))
                        .partitionsToOffsetInfo(group).get(30, TimeUnit.SECONDS);
                for (Map.Entry<TopicPartition, SharePartitionOffsetInfo> e : offsets.entrySet()) {
                    if (e.getValue() == null) {
                        continue;
                    }
                    System.out.println("START " + e.getKey().partition() + "="
                            + e.getValue().startOffset() + " "
                            + e.getValue().lag().map(String::valueOf).orElse("-"));
                }
            }
            System.out.println("READY");
            System.out.flush();
            while (!stop.get()) {
                Thread.sleep(100);
            }
        }
        System.out.println("CLOSED");
        System.out.flush();
    }

    private static void paced(KafkaShareConsumer<byte[], byte[]> consumer, long rate,
                              AtomicBoolean stop) throws InterruptedException {
        boolean announced = false;
        long began = System.currentTimeMillis();
        long start = began, consumed = 0;
        while (!stop.get()) {
            ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(200));
            if (!announced && (!records.isEmpty() || System.currentTimeMillis() - began > 10_000)) {
                System.out.println("READY");
                System.out.flush();
                announced = true;
            }
            if (records.isEmpty()) {
                start = System.currentTimeMillis();
                consumed = 0;
                continue;
            }
            for (ConsumerRecord<byte[], byte[]> r : records) {
                consumer.acknowledge(r, AcknowledgeType.ACCEPT);
            }
            consumer.commitSync();
            consumed += records.count();
            long due = start + consumed * 1000 / rate;
            while (!stop.get() && System.currentTimeMillis() < due) {
                Thread.sleep(Math.min(100, Math.max(1, due - System.currentTimeMillis())));
            }
        }
    }
}
