//! The Kafka sink: an idempotent producer whose `flush` and `commit` return
//! only when every message was acknowledged, and fail if any was not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use velo_datasource_core::format::Encoder;
use velo_datasource_core::format::json::JsonEncoder;
use velo_datasource_core::{
    DataSink, DataWriter, Error, FieldValue, Result, Schema, SinkConfig, SinkMetadata, SinkMetrics,
    SourceLink, SourcePosition, StreamRecord, async_trait,
};

use crate::link::ConsumerLink;
use crate::options::KafkaSinkOptions;

/// Records the first delivery failure (and whether retrying can help);
/// `flush` turns it into an error.
#[derive(Default)]
pub(crate) struct Deliveries {
    failed: Mutex<Option<(String, bool)>>,
}

/// Produce errors that no retry fixes.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result
            && let Ok(mut f) = self.failed.lock()
            && f.is_none()
        {
            use rdkafka::Message;
            *f = Some((
                format!("{}/{}: {e}", msg.topic(), msg.partition()),
                !permanent(e),
            ));
        }
    }
}

/// Writes records to a Kafka topic. Registered for `kafka://`.
#[derive(Debug, Default)]
pub struct KafkaSink {
    opts: Option<Arc<KafkaSinkOptions>>,
}

impl KafkaSink {
    /// An uninitialized sink.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DataSink for KafkaSink {
    async fn initialize(&mut self, config: SinkConfig) -> Result<()> {
        self.opts = Some(Arc::new(KafkaSinkOptions::from_config(&config)?));
        Ok(())
    }

    async fn validate_schema(&self, schema: &Schema) -> Result<()> {
        let o = self
            .opts
            .as_ref()
            .ok_or_else(|| Error::State("Kafka sink used before initialize".into()))?;
        for f in o.key_field.iter().chain(&o.header_fields) {
            if schema.field(f).is_none() {
                return Err(Error::Schema(format!(
                    "the Kafka sink takes `{f}` from records, but they have no such field"
                )));
            }
        }
        Ok(())
    }

    async fn create_writer(&self) -> Result<Box<dyn DataWriter>> {
        let o = self
            .opts
            .clone()
            .ok_or_else(|| Error::State("Kafka sink used before initialize".into()))?;
        let writer = tokio::task::spawn_blocking(move || KafkaWriter::new(o))
            .await
            .map_err(|e| Error::State(format!("producer task failed: {e}")))??;
        Ok(Box::new(writer))
    }

    fn supports_transactions(&self) -> bool {
        self.opts
            .as_ref()
            .is_some_and(|o| o.transactional_id.is_some())
    }

    fn metadata(&self) -> SinkMetadata {
        SinkMetadata {
            sink_type: "kafka".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_transactions: true,
            supports_upsert: false,
            supports_schema_evolution: true,
            capabilities: ["idempotent", "transactions", "keys", "headers"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Produces records to one topic.
pub struct KafkaWriter {
    opts: Arc<KafkaSinkOptions>,
    producer: Arc<BaseProducer<Deliveries>>,
    encoder: JsonEncoder,
    payload: Vec<u8>,
    key: String,
    in_transaction: bool,
    /// The Kafka reader feeding this writer, for exactly-once Kafka → Kafka.
    link: Option<Arc<ConsumerLink>>,
    /// The source position last committed with a transaction.
    sent: Option<SourcePosition>,
    /// The linked consumer's revocation count when the open transaction began.
    began_at_revocation: u64,
    metrics: SinkMetrics,
}

impl std::fmt::Debug for KafkaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaWriter")
            .field("topic", &self.opts.common.topics[0])
            .finish()
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Messages sent between two servings of delivery reports.
const POLL_EVERY: usize = 500;

/// How long one back-pressure wait serves delivery reports before sending again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

fn produce_error(o: &KafkaSinkOptions, what: &str, e: KafkaError) -> Error {
    let (fatal, fenced) = match &e {
        KafkaError::Transaction(t) => (
            t.is_fatal() || t.txn_requires_abort(),
            t.is_fatal()
                && matches!(
                    t.code(),
                    RDKafkaErrorCode::Fenced
                        | RDKafkaErrorCode::ProducerFenced
                        | RDKafkaErrorCode::InvalidProducerEpoch
                ),
        ),
        _ => (permanent(&e), false),
    };
    let message = match (fenced, &o.transactional_id) {
        (true, Some(id)) => format!(
            "{what}: fenced: a newer producer with transactional.id `{id}` has taken over, so this one must stop ({e})"
        ),
        _ => format!("{what}: {e}"),
    };
    Error::Connection {
        endpoint: o.common.brokers.clone(),
        message,
        retryable: !fatal,
        source: Some(Box::new(e)),
    }
}

/// Sends what lingers and waits until every message has its delivery report
/// served (blocking). rdkafka's own `flush` serves reports in `poll` calls
/// of 100 ms that last their whole 100 ms however early the last report
/// comes, so each commit would cost at least that; here the reports are
/// served in 1 ms steps.
pub(crate) fn wait_for_deliveries(
    producer: &BaseProducer<Deliveries>,
    timeout: Duration,
) -> std::result::Result<(), KafkaError> {
    let started = Instant::now();
    // Only to send lingering batches now: with a zero timeout it does not wait.
    match producer.flush(Duration::ZERO) {
        Ok(()) => return Ok(()),
        Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
        Err(e) => return Err(e),
    }
    while producer.in_flight_count() > 0 {
        if started.elapsed() > timeout {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// Retries of a transactional call that librdkafka marks retriable.
fn txn_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(6)
}

/// Ends the open transaction (blocking): sends the source's offsets into it
/// when there are any, then commits. Calls librdkafka marks retriable are
/// retried; an error that requires an abort aborts the transaction, so none
/// of it becomes visible and the offsets stay where they were; a fatal error
/// (fenced) is returned as it is.
fn commit_transaction_blocking(
    producer: &BaseProducer<Deliveries>,
    opts: &KafkaSinkOptions,
    offsets: Option<&(TopicPartitionList, ConsumerGroupMetadata)>,
) -> Result<()> {
    let attempt = || -> std::result::Result<(), (&'static str, KafkaError)> {
        if let Some((tpl, cgm)) = offsets {
            producer
                .send_offsets_to_transaction(tpl, cgm, TIMEOUT)
                .map_err(|e| ("send_offsets_to_transaction", e))?;
        }
        producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| ("commit_transaction", e))
    };
    let result = attempt
        .retry(txn_backoff())
        .sleep(std::thread::sleep)
        .when(|(_, e)| matches!(e, KafkaError::Transaction(t) if t.is_retriable()))
        .notify(|(what, e), delay| tracing::warn!(?delay, "{what} failed, retrying: {e}"))
        .call();
    match result {
        Ok(()) => Ok(()),
        Err((what, KafkaError::Transaction(t))) if t.txn_requires_abort() && !t.is_fatal() => {
            producer
                .abort_transaction(TIMEOUT)
                .map_err(|e| produce_error(opts, "abort_transaction", e))?;
            Err(Error::Connection {
                endpoint: opts.common.brokers.clone(),
                message: format!(
                    "{what}: {t}; the transaction was aborted: none of its records are visible and the source offsets did not move, so its records are read and written again"
                ),
                retryable: true,
                source: None,
            })
        }
        Err((what, e)) => Err(produce_error(opts, what, e)),
    }
}

impl KafkaWriter {
    fn new(opts: Arc<KafkaSinkOptions>) -> Result<Self> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &opts.common.brokers)
            .set("enable.idempotence", "true")
            .set("acks", &opts.acks)
            .set("linger.ms", "5");
        if let Some(comp) = &opts.compression {
            c.set("compression.type", comp);
        }
        if let Some(id) = &opts.transactional_id {
            c.set("transactional.id", id);
        }
        for (k, v) in &opts.common.client {
            c.set(k, v);
        }
        let producer: BaseProducer<Deliveries> = c
            .create_with_context(Deliveries::default())
            .map_err(|e| produce_error(&opts, "cannot create a producer", e))?;
        if opts.transactional_id.is_some() {
            producer
                .init_transactions(TIMEOUT)
                .map_err(|e| produce_error(&opts, "init_transactions", e))?;
        }
        Ok(KafkaWriter {
            opts,
            producer: Arc::new(producer),
            encoder: JsonEncoder::lines(),
            payload: Vec::with_capacity(1024),
            key: String::new(),
            in_transaction: false,
            link: None,
            sent: None,
            began_at_revocation: 0,
            metrics: SinkMetrics::new("kafka"),
        })
    }

    fn begin(&mut self) -> Result<()> {
        self.producer
            .begin_transaction()
            .map_err(|e| produce_error(&self.opts, "begin_transaction", e))?;
        self.in_transaction = true;
        self.began_at_revocation = self.link.as_ref().map_or(0, |l| l.revocations());
        Ok(())
    }

    /// Flushes, then commits the open transaction (with `offsets` in it).
    async fn end_transaction(
        &mut self,
        offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    ) -> Result<()> {
        let started = Instant::now();
        if let Err(e) = self.flush().await {
            // A message of the transaction was not delivered: abort it whole,
            // so that nothing of it shows and it is written again.
            if self.in_transaction {
                self.rollback().await?;
            }
            return Err(e);
        }
        if self.in_transaction {
            let producer = self.producer.clone();
            let opts = self.opts.clone();
            let result = tokio::task::spawn_blocking(move || {
                commit_transaction_blocking(&producer, &opts, offsets.as_ref())
            })
            .await
            .map_err(|e| Error::State(format!("commit task failed: {e}")))?;
            // Committed or aborted: either way no transaction is open any more,
            // except after a fatal error, when the producer is unusable anyway.
            self.in_transaction = false;
            if result.is_err() {
                // Failures of the aborted messages are expected; forget them.
                let _ = self.check_deliveries();
            }
            result?;
        }
        self.metrics.record_commit(started.elapsed());
        Ok(())
    }

    fn check_deliveries(&self) -> Result<()> {
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .map_err(|_| Error::State("delivery lock poisoned".into()))?
            .take();
        match failed {
            Some((e, retryable)) => Err(Error::Connection {
                endpoint: self.opts.common.brokers.clone(),
                message: format!("a message was not delivered: {e}"),
                retryable,
                source: None,
            }),
            None => Ok(()),
        }
    }

    fn send_one(&mut self, record: &StreamRecord) -> Result<()> {
        self.payload.clear();
        self.encoder.encode(record, &mut self.payload)?;
        if self.payload.last() == Some(&b'\n') {
            self.payload.pop();
        }
        let key: Option<&[u8]> = match &self.opts.key_field {
            Some(f) => match record.get(f) {
                Some(FieldValue::Null) | None => None,
                Some(FieldValue::String(s)) => Some(s.as_bytes()),
                Some(FieldValue::Bytes(b)) => Some(b),
                Some(other) => {
                    use std::fmt::Write;
                    self.key.clear();
                    let _ = write!(self.key, "{other}");
                    Some(self.key.as_bytes())
                }
            },
            None => record.key.as_deref(),
        };
        let topic = &self.opts.common.topics[0];
        let mut message = BaseRecord::to(topic).payload(&self.payload[..]);
        // A header list is a C allocation of its own: only when there are headers.
        if !record.headers.is_empty() || !self.opts.header_fields.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(
                record.headers.len() + self.opts.header_fields.len(),
            );
            for (k, v) in &record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            for f in &self.opts.header_fields {
                if let Some(v) = record.get(f).filter(|v| !v.is_null()) {
                    headers = headers.insert(Header {
                        key: f,
                        value: Some(v.to_string().as_bytes()),
                    });
                }
            }
            message = message.headers(headers);
        }
        if let Some(k) = key {
            message = message.key(k);
        }
        // The clock is read only when the queue is full (not once per message).
        let mut started: Option<Instant> = None;
        loop {
            match self.producer.send(message) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Back-pressure: let deliveries drain, bounded in time.
                    let started = *started.get_or_insert_with(Instant::now);
                    if started.elapsed() > TIMEOUT {
                        return Err(Error::Timeout {
                            operation: format!("producing to {topic} (the local queue stays full)"),
                            elapsed: started.elapsed(),
                        });
                    }
                    // `poll` waits out its whole timeout, events or not: keep it short.
                    self.producer.poll(QUEUE_FULL_WAIT);
                    message = back;
                }
                Err((e, _)) => {
                    return Err(produce_error(
                        &self.opts,
                        &format!("producing to {topic}"),
                        e,
                    ));
                }
            }
        }
    }
}

#[async_trait]
impl DataWriter for KafkaWriter {
    async fn write_batch(&mut self, records: &[StreamRecord]) -> Result<()> {
        let started = Instant::now();
        if self.opts.transactional_id.is_some() && !self.in_transaction {
            self.begin()?;
        }
        for (i, r) in records.iter().enumerate() {
            self.send_one(r)?;
            // Each poll serves one event of delivery reports (one produce
            // response). Served only once per batch, they pile up, the
            // messages they hold stay in the local queue until it is full,
            // and sending stalls in back-pressure waits.
            if i % POLL_EVERY == POLL_EVERY - 1 {
                self.producer.poll(Duration::ZERO);
            }
        }
        self.producer.poll(Duration::ZERO);
        self.check_deliveries()?;
        self.metrics
            .record_write(records.len(), 0, started.elapsed());
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let producer = self.producer.clone();
        let opts = self.opts.clone();
        tokio::task::spawn_blocking(move || {
            wait_for_deliveries(&producer, TIMEOUT).map_err(|e| produce_error(&opts, "flush", e))
        })
        .await
        .map_err(|e| Error::State(format!("flush task failed: {e}")))??;
        self.check_deliveries()
    }

    async fn commit(&mut self) -> Result<()> {
        self.end_transaction(None).await
    }

    /// With a linked Kafka reader and a `transactional.id`: commits the
    /// records and the reader's group offsets in one transaction.
    async fn commit_with_position(&mut self, position: &SourcePosition) -> Result<()> {
        let Some(link) = self.link.clone() else {
            return Err(Error::unsupported(
                "commit_with_position",
                "the Kafka sink without transactional.id and a Kafka source",
            ));
        };
        if self.sent.as_ref() == Some(position) && !self.in_transaction {
            return Ok(());
        }
        if self.in_transaction && link.revocations() != self.began_at_revocation {
            // Records of partitions now owned by another consumer are in this
            // transaction, and their offsets are no longer ours to commit:
            // their new owner reads them again from the group's offsets.
            // Committing would deliver them twice; abort instead.
            self.rollback().await?;
            return Err(Error::Connection {
                endpoint: self.opts.common.brokers.clone(),
                message: format!(
                    "the partitions of consumer group `{}` were reassigned while a transaction was open; \
                     it was aborted so that every record is delivered once: continue from the group's offsets",
                    link.group
                ),
                retryable: true,
                source: None,
            });
        }
        let offsets = link.owned_offsets(position)?;
        if !self.in_transaction {
            self.begin()?;
        }
        let cgm = link.group_metadata()?;
        self.end_transaction(Some((offsets, cgm))).await?;
        self.sent = Some(position.clone());
        Ok(())
    }

    /// With a linked Kafka reader: the group's committed offsets, which the
    /// transactions moved together with the data; they override a runner's
    /// checkpoint file, which is saved only after the transaction.
    async fn committed_position(&mut self) -> Result<Option<SourcePosition>> {
        let Some(link) = self.link.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || link.committed(TIMEOUT))
            .await
            .map_err(|e| Error::State(format!("committed offsets task failed: {e}")))?
    }

    fn link_source(&mut self, link: &SourceLink) -> bool {
        if self.opts.transactional_id.is_none() {
            return false;
        }
        match link.clone().downcast::<ConsumerLink>() {
            Ok(consumer) => {
                tracing::info!(
                    group = %consumer.group,
                    "exactly-once: the consumer group's offsets are committed in the producer's transactions"
                );
                self.link = Some(consumer);
                true
            }
            Err(_) => false,
        }
    }

    async fn rollback(&mut self) -> Result<()> {
        if !self.in_transaction {
            if self.opts.transactional_id.is_some() {
                return Ok(());
            }
            return Err(Error::unsupported(
                "rollback of sent messages",
                "the Kafka sink without transactional.id",
            ));
        }
        let producer = self.producer.clone();
        let opts = self.opts.clone();
        tokio::task::spawn_blocking(move || {
            // Abort needs the delivery reports of the transaction's messages served first.
            let _ = wait_for_deliveries(&producer, TIMEOUT);
            producer
                .abort_transaction(TIMEOUT)
                .map_err(|e| produce_error(&opts, "abort_transaction", e))
        })
        .await
        .map_err(|e| Error::State(format!("abort task failed: {e}")))??;
        self.in_transaction = false;
        // Failures of aborted messages are expected; forget them.
        let _ = self.check_deliveries();
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.commit().await
    }
}
