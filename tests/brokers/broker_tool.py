"""Sets up and reads back the brokers of the streaming-destination tests with
clients that are not ferry's own (nats-py, confluent-kafka).

  nats-stream URL NAME SUBJECT [MAX_MSG_SIZE]   create a JetStream stream
  nats-read URL NAME                            print every message, JSON lines
  kafka-topic BROKERS TOPIC PARTITIONS          create a topic
  kafka-read BROKERS TOPIC AT_LEAST             print every record, JSON lines

Each message or record is printed as one JSON object: the body, the headers,
the subject or (partition, offset, key), and for Kafka the partition the
Java client's murmur2 would choose for the key.
"""
import asyncio
import json
import sys
import time


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner for keys)."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def java_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def nats_stream(url, name, subject, max_msg_size=None):
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    config = StreamConfig(name=name, subjects=[subject])
    if max_msg_size:
        config.max_msg_size = int(max_msg_size)
    await js.add_stream(config)
    await nc.close()


async def nats_read(url, name):
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(name)
    last = info.state.last_seq
    seq = info.state.first_seq
    while last and seq <= last:
        try:
            msg = await js.get_msg(name, seq)
        except nats.js.errors.NotFoundError:
            seq += 1
            continue
        print(json.dumps({
            "subject": msg.subject,
            "seq": msg.seq,
            "headers": dict(msg.headers or {}),
            "event": json.loads(msg.data),
        }))
        seq += 1
    await nc.close()


def kafka_topic(brokers, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics([NewTopic(topic, num_partitions=int(partitions), replication_factor=1)])
    for f in futures.values():
        f.result(30)


def kafka_read(brokers, topic, at_least):
    """Every record of every partition: reads until at least `at_least`
    records arrived and then none for 2 s (or 60 s pass). Partitions are
    assigned directly, from their first offset (no consumer group)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "ferry-test-reader",
        "enable.auto.commit": False,
    })
    partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    deadline = time.monotonic() + 60
    seen, last = 0, time.monotonic()
    while time.monotonic() < deadline:
        if seen >= int(at_least) and time.monotonic() - last > 2:
            break
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            sys.exit(f"read failed: {msg.error()}")
        key = msg.key()
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": key.decode() if key is not None else None,
            "java_partition": java_partition(key, len(partitions)) if key is not None else None,
            "headers": {k: v.decode() for k, v in (msg.headers() or [])},
            "event": json.loads(msg.value()),
        }))
        seen, last = seen + 1, time.monotonic()
    consumer.close()


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "nats-stream":
        asyncio.run(nats_stream(*args))
    elif cmd == "nats-read":
        asyncio.run(nats_read(*args))
    elif cmd == "kafka-topic":
        kafka_topic(*args)
    elif cmd == "kafka-read":
        kafka_read(*args)
    elif cmd == "selfcheck":
        # murmur2 against the Java client's own test vectors (Kafka's
        # UtilsTest), so the partition check is itself checked.
        vectors = {"21": -973932308, "foobar": -790332482, "abc": 479470107,
                   "a-little-bit-long-string": -985981536,
                   "a-little-bit-longer-string": -1486304829,
                   "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971}
        for text, want in vectors.items():
            got = murmur2(text.encode())
            got = got - 2**32 if got >= 2**31 else got
            if got != want:
                sys.exit(f"murmur2({text!r}) = {got}, Java says {want}")
        print("ok")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
