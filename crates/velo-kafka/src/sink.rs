//! The Kafka sink: an idempotent producer whose `flush` and `commit` return
//! only when every message was acknowledged, and fail if any was not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use velo_datasource_core::format::Encoder;
use velo_datasource_core::format::json::JsonEncoder;
use velo_datasource_core::{
    DataSink, DataWriter, Error, FieldValue, Result, Schema, SinkConfig, SinkMetadata, SinkMetrics,
    StreamRecord, async_trait,
};

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

fn produce_error(o: &KafkaSinkOptions, what: &str, e: KafkaError) -> Error {
    let fatal = permanent(&e)
        || matches!(&e, KafkaError::Transaction(t) if t.is_fatal() || t.txn_requires_abort());
    Error::Connection {
        endpoint: o.common.brokers.clone(),
        message: format!("{what}: {e}"),
        retryable: !fatal,
        source: Some(Box::new(e)),
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
            metrics: SinkMetrics::new("kafka"),
        })
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
                    self.producer.poll(Duration::from_millis(50));
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
            self.producer
                .begin_transaction()
                .map_err(|e| produce_error(&self.opts, "begin_transaction", e))?;
            self.in_transaction = true;
        }
        for r in records {
            self.send_one(r)?;
        }
        // Serve delivery reports without waiting.
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
            producer
                .flush(TIMEOUT)
                .map_err(|e| produce_error(&opts, "flush", e))
        })
        .await
        .map_err(|e| Error::State(format!("flush task failed: {e}")))??;
        self.check_deliveries()
    }

    async fn commit(&mut self) -> Result<()> {
        let started = Instant::now();
        self.flush().await?;
        if self.in_transaction {
            let producer = self.producer.clone();
            let opts = self.opts.clone();
            tokio::task::spawn_blocking(move || {
                producer
                    .commit_transaction(TIMEOUT)
                    .map_err(|e| produce_error(&opts, "commit_transaction", e))
            })
            .await
            .map_err(|e| Error::State(format!("commit task failed: {e}")))??;
            self.in_transaction = false;
        }
        self.metrics.record_commit(started.elapsed());
        Ok(())
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
            let _ = producer.flush(TIMEOUT);
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
