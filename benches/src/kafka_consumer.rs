//! A librdkafka consumer driven through its C API, for the Kafka driver's receivers.
//!
//! rdkafka's `BaseConsumer` turns on librdkafka's event interface and takes records one
//! event at a time: at a million records a second its per-record event, reference count
//! and clock reads cost more than librdkafka's own work. librdkafka's batch call
//! (`rd_kafka_consume_batch_queue`, what confluent-kafka-python's `consume()` uses) takes
//! up to thousands of records in one call, but only without that event interface: with it,
//! a rebalance met inside the batch call is answered with a forced unassign. So this
//! consumer is made with the C API, with a rebalance callback that applies assignments as
//! rdkafka's default context does (incrementally under the cooperative protocol).

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Mutex;

use rd::rd_kafka_resp_err_t as E;
use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;

use crate::workload::sent_at;

/// Most records one batch call returns.
const BATCH: usize = 10_000;

/// A subscribed consumer in a group; closed (leaving the group) when dropped.
pub(crate) struct RawConsumer {
    rk: *mut rd::rd_kafka_t,
    queue: *mut rd::rd_kafka_queue_t,
    messages: Vec<*mut rd::rd_kafka_message_t>,
    /// The first rebalance failure, for `poll` to report (the callback cannot return one);
    /// the callback's opaque, so boxed, and dropped after the consumer is destroyed.
    rebalance_error: Box<Mutex<Option<String>>>,
}

// SAFETY: librdkafka handles may be used from any thread; the consumer is used by one
// thread at a time (`&mut self`).
unsafe impl Send for RawConsumer {}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka's strings are NUL-terminated and outlive this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Applies a rebalance as rdkafka's default consumer context does.
unsafe extern "C" fn rebalance(
    rk: *mut rd::rd_kafka_t,
    err: E,
    parts: *mut rd::rd_kafka_topic_partition_list_t,
    opaque: *mut c_void,
) {
    // SAFETY: librdkafka calls this on the consumer's own thread with a live list.
    let failure = unsafe {
        let assign = err == E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if text(rd::rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE" {
            let error = if assign {
                rd::rd_kafka_incremental_assign(rk, parts)
            } else {
                rd::rd_kafka_incremental_unassign(rk, parts)
            };
            (!error.is_null()).then(|| {
                let why = text(rd::rd_kafka_error_string(error));
                rd::rd_kafka_error_destroy(error);
                why
            })
        } else {
            let e = rd::rd_kafka_assign(rk, if assign { parts } else { std::ptr::null_mut() });
            (e != E::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| text(rd::rd_kafka_err2str(e)))
        }
    };
    if let Some(why) = failure {
        // SAFETY: the opaque is the consumer's boxed slot, alive while librdkafka runs.
        let slot = unsafe { &*(opaque as *const Mutex<Option<String>>) };
        slot.lock()
            .unwrap()
            .get_or_insert(format!("applying a rebalance: {why}"));
    }
}

impl RawConsumer {
    /// A consumer with `config` (which names the group), subscribed to `topic`.
    pub(crate) fn subscribe(config: &ClientConfig, topic: &str) -> anyhow::Result<Self> {
        let mut errstr = [0 as c_char; 512];
        // SAFETY: the configuration is handed to `rd_kafka_new` (which owns it on success)
        // or destroyed; every string passed is NUL-terminated and copied by librdkafka.
        unsafe {
            let conf = rd::rd_kafka_conf_new();
            for (key, value) in config.config_map() {
                let (k, v) = (CString::new(key)?, CString::new(value)?);
                let res = rd::rd_kafka_conf_set(
                    conf,
                    k.as_ptr(),
                    v.as_ptr(),
                    errstr.as_mut_ptr(),
                    errstr.len(),
                );
                if res != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
                    rd::rd_kafka_conf_destroy(conf);
                    anyhow::bail!("consumer setting {key}: {}", text(errstr.as_ptr()));
                }
            }
            rd::rd_kafka_conf_set_rebalance_cb(conf, Some(rebalance));
            let rebalance_error = Box::new(Mutex::new(None));
            rd::rd_kafka_conf_set_opaque(conf, &*rebalance_error as *const _ as *mut c_void);
            let rk = rd::rd_kafka_new(
                rd::rd_kafka_type_t::RD_KAFKA_CONSUMER,
                conf,
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if rk.is_null() {
                rd::rd_kafka_conf_destroy(conf);
                anyhow::bail!("a Kafka consumer: {}", text(errstr.as_ptr()));
            }
            // From here `Drop` closes and destroys `rk`.
            rd::rd_kafka_poll_set_consumer(rk);
            let consumer = RawConsumer {
                rk,
                queue: rd::rd_kafka_queue_get_consumer(rk),
                messages: Vec::with_capacity(BATCH),
                rebalance_error,
            };
            let topics = rd::rd_kafka_topic_partition_list_new(1);
            let name = CString::new(topic)?;
            rd::rd_kafka_topic_partition_list_add(topics, name.as_ptr(), -1);
            let e = rd::rd_kafka_subscribe(rk, topics);
            rd::rd_kafka_topic_partition_list_destroy(topics);
            anyhow::ensure!(
                e == E::RD_KAFKA_RESP_ERR_NO_ERROR,
                "subscribing to {topic}: {}",
                text(rd::rd_kafka_err2str(e))
            );
            Ok(consumer)
        }
    }

    /// Appends the send time of each record ready now, or else of those that arrive
    /// within `timeout_ms` (the first one waited for, then what else is ready, up to a
    /// batch); an error for a failed rebalance or a consumer error other than a partition's
    /// end.
    pub(crate) fn poll(
        &mut self,
        timeout_ms: i32,
        sent: &mut Vec<Option<u64>>,
    ) -> anyhow::Result<()> {
        // librdkafka's batch call waits for a full batch (or the timeout): under load it
        // fills at once, at a trickle it would hold records back, so it is only asked to
        // wait for one.
        if self.take(0, BATCH)? == 0 && self.take(timeout_ms, 1)? == 1 {
            self.take(0, BATCH - 1)?;
        }
        let mut failure = None;
        for &m in &self.messages {
            // SAFETY: each message librdkafka handed over is read, then destroyed once.
            unsafe {
                let r = &*m;
                match r.err {
                    E::RD_KAFKA_RESP_ERR_NO_ERROR => {
                        let value = if r.payload.is_null() {
                            &[][..]
                        } else {
                            std::slice::from_raw_parts(r.payload as *const u8, r.len)
                        };
                        sent.push(sent_at(value));
                    }
                    E::RD_KAFKA_RESP_ERR__PARTITION_EOF => {}
                    e => {
                        failure.get_or_insert_with(|| text(rd::rd_kafka_err2str(e)));
                    }
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
        self.messages.clear();
        if let Some(why) = failure {
            anyhow::bail!("consuming: {why}");
        }
        if let Some(why) = self.rebalance_error.lock().unwrap().take() {
            anyhow::bail!(why);
        }
        Ok(())
    }

    /// Appends up to `max` messages (within the buffer's room) to `messages`: how many.
    fn take(&mut self, timeout_ms: i32, max: usize) -> anyhow::Result<usize> {
        let room = (BATCH - self.messages.len()).min(max);
        // SAFETY: librdkafka fills at most `room` pointers past the current length, within
        // the buffer's capacity of BATCH.
        unsafe {
            let n = rd::rd_kafka_consume_batch_queue(
                self.queue,
                timeout_ms,
                self.messages.as_mut_ptr().add(self.messages.len()),
                room,
            );
            let n = usize::try_from(n).map_err(|_| {
                let e = rd::rd_kafka_last_error();
                anyhow::anyhow!("consuming: {}", text(rd::rd_kafka_err2str(e)))
            })?;
            let n = n.min(room);
            self.messages.set_len(self.messages.len() + n);
            Ok(n)
        }
    }
}

impl Drop for RawConsumer {
    fn drop(&mut self) {
        // SAFETY: the handles were made in `subscribe` and are released once, the queue
        // before the consumer; closing leaves the group (serving the revocation).
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_consumer_close(self.rk);
            rd::rd_kafka_destroy(self.rk);
        }
    }
}
