//! The workload runner's driver for rafka's Kafka listener through librdkafka (the
//! `rdkafka` crate): the same workload files as the gRPC driver, so the two paths into
//! one engine compare in one run.
//!
//! - **Topic**: created with Kafka's CreateTopics if missing (the workload's partitions,
//!   replication factor and topic configs).
//! - **Producer**: a `BaseProducer` whose delivery reports, served on a thread of their
//!   own, advance a watermark of records delivered in send order; an acknowledgement is a
//!   future on that watermark, so a record costs no allocation or channel of its own
//!   beyond librdkafka's (as Kafka's own perf tools count deliveries with callbacks). `acks`, `compression`, `linger.ms` and
//!   idempotence from the workload (`enable.idempotence` defaults on with acks=all, as
//!   rafka's client).
//! - **Consumer**: a `BaseConsumer` in the run's group (the classic protocol with
//!   cooperative-sticky), from the earliest record or the end; its queue is served on a
//!   thread of its own that reads each value where librdkafka holds it and hands the send
//!   times over in batches.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::task::AtomicWaker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rd;
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use crate::kafka_consumer::RawConsumer;
use crate::workload::{Driver, RecordReceiver, RecordSender, Workload};

/// Drives rafka's Kafka listeners.
pub struct KafkaDriver {
    bootstrap: String,
}

impl KafkaDriver {
    /// `bootstrap`: the brokers' Kafka listeners, `host:port,...`.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }
}

/// Which records of a producer are delivered: every one numbered below `done` (numbered
/// in send order), whatever order the callbacks came in.
#[derive(Default)]
struct Deliveries {
    done: AtomicU64,
    /// The number the runner's acknowledgement task waits on (`u64::MAX`: none).
    waiting_for: AtomicU64,
    waker: AtomicWaker,
    ahead: Mutex<Ahead>,
    error: OnceLock<String>,
}

/// Delivered records past the first gap (several partitions complete out of order):
/// `delivered[i]` for record `next + i`.
#[derive(Default)]
struct Ahead {
    next: u64,
    delivered: VecDeque<bool>,
}

impl Deliveries {
    /// Record `seq` delivered (called for every record of a delivery report).
    fn mark(&self, seq: u64) {
        let mut guard = self.ahead.lock().unwrap();
        let a = &mut *guard;
        let Some(i) = seq.checked_sub(a.next).map(|i| i as usize) else {
            return; // reported before
        };
        if a.delivered.len() <= i {
            a.delivered.resize(i + 1, false);
        }
        a.delivered[i] = true;
        while a.delivered.front() == Some(&true) {
            a.delivered.pop_front();
            a.next += 1;
        }
        // SeqCst pairs with the acknowledgement's store of `waiting_for` then load of
        // `done`: one of the two sides sees the other.
        self.done.store(a.next, Ordering::SeqCst);
    }

    /// Wakes the acknowledgement task if what it waits for is delivered (once per report,
    /// not per record).
    fn wake_if_waited(&self) {
        if self.done.load(Ordering::SeqCst) > self.waiting_for.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    fn fail(&self, why: String) {
        let _ = self.error.set(why);
    }
}

/// The producer's context: delivery reports reach it only while the producer is dropped
/// (its flush); while it runs, [`delivery_thread`] serves them.
struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        if let Err((e, _)) = result {
            self.0.fail(e.to_string());
        }
        self.0.mark(seq as u64);
        self.0.wake_if_waited();
    }
}

/// A client handle for a thread of its own (librdkafka's handles are thread-safe).
struct Native(*mut rd::rd_kafka_t);

// SAFETY: librdkafka handles may be used from any thread; the producer outlives the
// thread (the thread holds an `Arc` of it).
unsafe impl Send for Native {}

/// Serves the producer's delivery reports from librdkafka's main queue: marks every
/// record of a report, then wakes the acknowledgement task once. rdkafka's own poll loop
/// wraps each record in a message handle with a reference count and calls back per
/// record; at a million records a second that alone was a third of a core.
fn delivery_thread(
    producer: Arc<BaseProducer<DeliveryContext>>,
    native: Native,
    deliveries: Arc<Deliveries>,
    stop: Arc<AtomicBool>,
) {
    // SAFETY: `native` is the live producer's handle; the queue reference is released
    // below; each event is destroyed after its messages are read.
    unsafe {
        let queue = rd::rd_kafka_queue_get_main(native.0);
        let mut messages: Vec<*const rd::rd_kafka_message_t> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let event = rd::rd_kafka_queue_poll(queue, 100);
            if event.is_null() {
                continue;
            }
            match rd::rd_kafka_event_type(event) {
                rd::RD_KAFKA_EVENT_DR => {
                    let n = rd::rd_kafka_event_message_count(event);
                    messages.clear();
                    messages.reserve(n);
                    let got = rd::rd_kafka_event_message_array(event, messages.as_mut_ptr(), n);
                    messages.set_len(got.min(n));
                    for &m in &messages {
                        let m = &*m;
                        if m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                            let why = CStr::from_ptr(rd::rd_kafka_err2str(m.err));
                            deliveries.fail(why.to_string_lossy().into_owned());
                        }
                        deliveries.mark(m._private as usize as u64);
                    }
                    deliveries.wake_if_waited();
                }
                rd::RD_KAFKA_EVENT_ERROR if rd::rd_kafka_event_error_is_fatal(event) != 0 => {
                    let why = CStr::from_ptr(rd::rd_kafka_event_error_string(event));
                    deliveries.fail(why.to_string_lossy().into_owned());
                    deliveries.waker.wake();
                }
                // Transient errors (a lost connection) librdkafka retries itself.
                _ => {}
            }
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
    }
    drop(producer);
}

/// A librdkafka topic handle: records are produced through it, without looking the topic
/// up by name (and copying the name into a C string) for each one, as `producev` does.
struct Topic(*mut rd::rd_kafka_topic_t);

// SAFETY: librdkafka topic handles may be used from any thread.
unsafe impl Send for Topic {}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_topic_new`, released once, before its producer.
        unsafe { rd::rd_kafka_topic_destroy(self.0) }
    }
}

/// A librdkafka producer and its topic.
pub struct KafkaSender {
    // Dropped before the producer it belongs to (fields drop in order).
    topic: Topic,
    // The client the topic and the delivery thread use.
    _producer: Arc<BaseProducer<DeliveryContext>>,
    deliveries: Arc<Deliveries>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    next: u64,
}

impl Drop for KafkaSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One record's acknowledgement: ready once every record up to it is delivered.
pub struct KafkaAck {
    seq: u64,
    deliveries: Arc<Deliveries>,
}

impl Future for KafkaAck {
    type Output = anyhow::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<anyhow::Result<()>> {
        let d = &self.deliveries;
        let check = || {
            if let Some(e) = d.error.get() {
                Some(Err(anyhow::anyhow!("a record was not delivered: {e}")))
            } else if d.done.load(Ordering::SeqCst) > self.seq {
                Some(Ok(()))
            } else {
                None
            }
        };
        if let Some(r) = check() {
            return Poll::Ready(r);
        }
        d.waker.register(cx.waker());
        d.waiting_for.store(self.seq, Ordering::SeqCst);
        match check() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl RecordSender for KafkaSender {
    type Ack = KafkaAck;

    async fn send(&mut self, key: Option<Bytes>, value: &[u8]) -> anyhow::Result<KafkaAck> {
        use rd::rd_kafka_resp_err_t as E;
        let seq = self.next;
        let key = key.as_deref().unwrap_or_default();
        loop {
            // SAFETY: the topic handle is live; librdkafka copies the value (F_COPY) and
            // the key before it returns; the opaque is a number, never dereferenced.
            let (rc, err) = unsafe {
                let rc = rd::rd_kafka_produce(
                    self.topic.0,
                    -1, // RD_KAFKA_PARTITION_UA: the configured partitioner picks.
                    rd::RD_KAFKA_MSG_F_COPY,
                    value.as_ptr() as *mut _,
                    value.len(),
                    // An empty key is none: librdkafka sends null for a null pointer.
                    if key.is_empty() {
                        std::ptr::null()
                    } else {
                        key.as_ptr().cast()
                    },
                    key.len(),
                    seq as usize as *mut _,
                );
                (rc, rd::rd_kafka_last_error())
            };
            match (rc, err) {
                (0, _) => break,
                // A full queue: wait for room, as the gRPC driver waits for buffer space.
                (_, E::RD_KAFKA_RESP_ERR__QUEUE_FULL) => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                (_, e) => anyhow::bail!(
                    "handing a record to librdkafka: {}",
                    RDKafkaErrorCode::from(e)
                ),
            }
        }
        self.next += 1;
        Ok(KafkaAck {
            seq,
            deliveries: self.deliveries.clone(),
        })
    }
}

/// A member of the run's group: its consumer polled on a thread of its own.
pub struct KafkaReceiver {
    batches: mpsc::Receiver<anyhow::Result<Vec<Option<u64>>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The consumer's thread: send times in batches of what is ready (after up to 100 ms for
/// the first), until told to stop; leaves the group as it ends.
fn consume_thread(
    mut consumer: RawConsumer,
    batches: mpsc::Sender<anyhow::Result<Vec<Option<u64>>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        if let Err(e) = consumer.poll(100, &mut batch) {
            let _ = batches.blocking_send(Err(e));
            return;
        }
        if !batch.is_empty() && batches.blocking_send(Ok(batch)).is_err() {
            return;
        }
    }
}

impl RecordReceiver for KafkaReceiver {
    async fn poll(&mut self, timeout: Duration, sent: &mut Vec<Option<u64>>) -> anyhow::Result<()> {
        match tokio::time::timeout(timeout, self.batches.recv()).await {
            Err(_) => Ok(()),
            Ok(None) => anyhow::bail!("the Kafka consumer's thread ended"),
            Ok(Some(batch)) => {
                sent.extend(batch?);
                Ok(())
            }
        }
    }

    async fn close(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.batches);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the Kafka consumer's thread panicked"))
    }
}

impl Driver for KafkaDriver {
    type Sender = KafkaSender;
    type Receiver = KafkaReceiver;

    async fn prepare(&self, w: &Workload) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().context("a Kafka admin client")?;
        let configs: Vec<(&str, &str)> = w
            .topic_configs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut topic = NewTopic::new(
            &w.topic,
            w.partitions as i32,
            TopicReplication::Fixed(w.replication_factor as i32),
        );
        for (k, v) in &configs {
            topic = topic.set(k, v);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, e)) => anyhow::bail!("creating topic {name}: {e}"),
            }
        }
        Ok(())
    }

    async fn sender(&self, w: &Workload, _index: u32) -> anyhow::Result<KafkaSender> {
        let mut c = self.config();
        let acks = match w.acks.as_str() {
            "all" => "all",
            "leader" => "1",
            "none" => "0",
            other => anyhow::bail!("acks {other}: all, leader or none"),
        };
        let idempotence = w.idempotence.unwrap_or(acks == "all");
        c.set("acks", acks)
            .set("compression.type", &w.compression)
            .set("linger.ms", w.linger_ms.unwrap_or(5).to_string())
            .set("enable.idempotence", idempotence.to_string())
            // As much buffered as the gRPC driver's client holds (64 MiB of records): a
            // deeper queue only adds waiting to every record's latency.
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "1000000")
            .set("batch.size", "1000000");
        if let Some(n) = w.in_flight_per_partition {
            c.set("max.in.flight.requests.per.connection", n.to_string());
        }
        let deliveries = Arc::new(Deliveries {
            waiting_for: AtomicU64::new(u64::MAX),
            ..Deliveries::default()
        });
        let producer: Arc<BaseProducer<DeliveryContext>> = Arc::new(
            c.create_with_context(DeliveryContext(deliveries.clone()))
                .context("a Kafka producer")?,
        );
        let name = std::ffi::CString::new(w.topic.as_str())?;
        // SAFETY: a live producer handle and a NUL-terminated name (copied by librdkafka).
        let topic = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        anyhow::ensure!(
            !topic.is_null(),
            "a librdkafka handle for topic {}",
            w.topic
        );
        let topic = Topic(topic);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("kafka-deliveries".into())
            .spawn({
                let (producer, deliveries, stop) =
                    (producer.clone(), deliveries.clone(), stop.clone());
                let native = Native(producer.client().native_ptr());
                move || delivery_thread(producer, native, deliveries, stop)
            })?;
        Ok(KafkaSender {
            topic,
            _producer: producer,
            deliveries,
            stop,
            thread: Some(thread),
            next: 0,
        })
    }

    async fn receiver(
        &self,
        w: &Workload,
        _index: u32,
        group: &str,
        from_earliest: bool,
    ) -> anyhow::Result<KafkaReceiver> {
        let mut config = self.config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "auto.offset.reset",
                if from_earliest { "earliest" } else { "latest" },
            );
        let consumer = RawConsumer::subscribe(&config, &w.topic)?;
        let (tx, batches) = mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn({
                let stop = stop.clone();
                move || consume_thread(consumer, tx, stop)
            })?;
        Ok(KafkaReceiver {
            batches,
            stop,
            thread,
        })
    }
}
