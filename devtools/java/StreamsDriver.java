// A Kafka Streams application of the KIP-1071 protocol (group.protocol=streams), for tests:
// kafka-python cannot join a streams group. Usage:
//   StreamsDriver <bootstrap> <application id> <topic> <client-id>
// Runs a stateless topology reading the topic (each record counted, nothing written), committing
// every 100 ms. Once RUNNING with its tasks, prints "MEMBER <member id> <client id> <host>" for
// each member as Admin.describeStreamsGroups tells it. Reads stdin: a line "pause" pauses
// processing (KafkaStreams.pause(), the member stays in the group) and prints "PAUSED" once the
// last processed offsets are committed; end of input closes the application, leaving the group,
// and prints "CLOSED".
import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.StreamsGroupDescription;
import org.apache.kafka.clients.admin.StreamsGroupMemberDescription;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;

public final class StreamsDriver {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], appId = args[1], topic = args[2], clientId = args[3];
        File stateDir = Files.createTempDirectory("klag-streams-").toFile();
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.CLIENT_ID_CONFIG, clientId);
        props.put(StreamsConfig.GROUP_PROTOCOL_CONFIG, "streams");
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "100");
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.getPath());
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.ByteArraySerde.class);
        props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        props.put(StreamsConfig.consumerPrefix("metadata.max.age.ms"), "1000");
        StreamsBuilder builder = new StreamsBuilder();
        builder.<byte[], byte[]>stream(topic).foreach((k, v) -> { });
        CountDownLatch running = new CountDownLatch(1);
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                running.countDown();
            }
        });
        streams.start();
        if (!running.await(90, TimeUnit.SECONDS)) {
            System.out.println("ERROR not running");
            System.exit(2);
        }
        announce(bootstrap, appId);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.trim().equals("pause")) {
                streams.pause();
                // Processed offsets are committed on the commit interval; wait out a few.
                Thread.sleep(1000);
                System.out.println("PAUSED");
                System.out.flush();
            }
        }
        streams.close(Duration.ofSeconds(30));
        System.out.println("CLOSED");
        System.out.flush();
    }

    // The members as the group coordinator describes them, once each has an active task.
    private static void announce(String bootstrap, String group) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        long deadline = System.currentTimeMillis() + 60_000;
        try (Admin admin = Admin.create(props)) {
            while (System.currentTimeMillis() < deadline) {
                StreamsGroupDescription group1 = admin.describeStreamsGroups(List.of(group))
                    .all().get().get(group);
                boolean assigned = !group1.members().isEmpty() && group1.members().stream()
                    .allMatch(m -> !m.assignment().activeTasks().isEmpty());
                if (assigned) {
                    for (StreamsGroupMemberDescription m : group1.members()) {
                        System.out.println("MEMBER " + m.memberId() + " " + m.clientId() + " "
                                           + m.clientHost());
                    }
                    System.out.println("READY " + group1.groupState());
                    System.out.flush();
                    return;
                }
                Thread.sleep(200);
            }
        }
        System.out.println("ERROR no assignment");
        System.exit(2);
    }
}
