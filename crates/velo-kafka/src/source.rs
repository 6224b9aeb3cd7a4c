//! The Kafka source: a consumer whose offsets move only when the sink has
//! the records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use velo_datasource_core::format::json::JsonLinesDecoder;
use velo_datasource_core::format::{self, Decoder, FormatOptions};
use velo_datasource_core::{
    BadRecordPolicy, DataReader, DataSource, DataType, Error, EventTimeExtractor, FieldDefinition,
    FieldValue, FileFormat, Lag, Result, Schema, SourceConfig, SourceLink, SourceMetadata,
    SourceMetrics, SourceOffset, SourcePosition, StreamRecord, async_trait,
};

use crate::link::ConsumerLink;
use crate::options::{KafkaSourceOptions, PayloadFormat, ResetPolicy};

/// Next offset to read per (topic, partition), for records handed out.
type Positions = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// High watermark per (topic, partition), from librdkafka's statistics.
type Highs = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// Commits stored offsets before partitions are taken away, forgets the
/// positions of partitions this consumer no longer owns, and keeps the high
/// watermarks librdkafka reports in its statistics (for lag, without extra
/// broker round trips).
pub(crate) struct Ctx {
    positions: Positions,
    highs: Highs,
    /// Rebalances that took partitions away, so far (a transactional writer
    /// fed by this consumer aborts a transaction that spans one).
    pub(crate) revocations: std::sync::atomic::AtomicU64,
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        if let Ok(mut highs) = self.highs.lock() {
            for (topic, t) in statistics.topics {
                for (partition, p) in t.partitions {
                    if partition >= 0 && p.hi_offset >= 0 {
                        highs.insert((topic.clone(), partition), p.hi_offset);
                    }
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.revocations
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(e) => tracing::warn!("committing before a rebalance failed: {e}"),
            }
            if let Ok(mut p) = self.positions.lock() {
                for e in tpl.elements() {
                    p.remove(&(e.topic().to_owned(), e.partition()));
                }
            }
        }
    }
}

/// Commit failures that only mean "not now": a rebalance, a moving or
/// unreachable coordinator. The offsets stay stored and are committed
/// before revocation or by the next commit; the runner's checkpoint has them.
fn commit_can_wait(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::WaitingForCoordinator
    )
}

/// The topic, partition and offset of a Kafka offset; any other kind is an error.
pub(crate) fn kafka_offset(o: &SourceOffset) -> Result<(&str, i32, i64)> {
    match o {
        SourceOffset::Kafka {
            topic,
            partition,
            offset,
        } => Ok((topic, *partition, *offset)),
        other => Err(Error::Offset(format!(
            "not a Kafka offset: {}",
            other.describe()
        ))),
    }
}

pub(crate) fn kafka_error(brokers: &str, what: &str, e: KafkaError) -> Error {
    let retryable = !matches!(
        e,
        KafkaError::ClientCreation(_) | KafkaError::Subscription(_) | KafkaError::Seek(_)
    );
    Error::Connection {
        endpoint: brokers.to_owned(),
        message: format!("{what}: {e}"),
        retryable,
        source: Some(Box::new(e)),
    }
}

fn consumer_config(o: &KafkaSourceOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &o.common.brokers)
        .set("group.id", &o.group_id)
        .set(
            "enable.auto.commit",
            if o.auto_commit { "true" } else { "false" },
        )
        // Offsets are stored only by `commit()`, after the sink has the records:
        // closing a consumer must not store what it fetched but never handed out.
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            o.commit_interval.as_millis().max(1).to_string(),
        )
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "1000")
        // librdkafka pauses fetching for 1 s (its default) whenever the local
        // queue is over its limits: a reader that drains in batches then
        // stalls a second at a time. 100 ms keeps fetching close behind.
        .set("fetch.queue.backoff.ms", "100")
        .set(
            "auto.offset.reset",
            match o.reset {
                ResetPolicy::Earliest => "earliest",
                ResetPolicy::Latest => "latest",
                ResetPolicy::None => "error",
            },
        );
    for (k, v) in &o.common.client {
        c.set(k, v);
    }
    c
}

/// Reads Kafka topics. Registered for `kafka://`.
#[derive(Debug, Default)]
pub struct KafkaDataSource {
    opts: Option<Arc<KafkaSourceOptions>>,
}

impl KafkaDataSource {
    /// An uninitialized source.
    pub fn new() -> Self {
        Self::default()
    }

    fn opts(&self) -> Result<&Arc<KafkaSourceOptions>> {
        self.opts
            .as_ref()
            .ok_or_else(|| Error::State("Kafka source used before initialize".into()))
    }
}

#[async_trait]
impl DataSource for KafkaDataSource {
    async fn initialize(&mut self, config: SourceConfig) -> Result<()> {
        self.opts = Some(Arc::new(KafkaSourceOptions::from_config(&config)?));
        Ok(())
    }

    async fn fetch_schema(&self) -> Result<Schema> {
        // A throw-away reader in a group of its own, from the start, never committing.
        let mut o = (**self.opts()?).clone();
        o.group_id = format!("{}-schema-{}", o.group_id, std::process::id());
        o.reset = ResetPolicy::Earliest;
        o.bounded = true;
        o.poll_timeout = o.poll_timeout.min(Duration::from_secs(2));
        let mut reader = KafkaReader::new(Arc::new(o))?;
        let batch = reader.read_batch(100).await?;
        Ok(match batch.first() {
            Some(r) => r.schema().as_ref().clone(),
            None => reader
                .state
                .as_ref()
                .map(|s| s.schema.as_ref().clone())
                .unwrap_or_else(Schema::empty),
        })
    }

    async fn create_reader(&self) -> Result<Box<dyn DataReader>> {
        Ok(Box::new(KafkaReader::new(self.opts()?.clone())?))
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    fn supports_batch(&self) -> bool {
        true
    }

    fn metadata(&self) -> SourceMetadata {
        SourceMetadata {
            source_type: "kafka".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            supports_streaming: true,
            supports_batch: true,
            supports_schema_evolution: true,
            capabilities: [
                "consumer_group",
                "manual_commit",
                "seek",
                "bounded",
                "headers",
                "keys",
                "lag",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// What the blocking part of the reader owns.
struct State {
    opts: Arc<KafkaSourceOptions>,
    consumer: Arc<BaseConsumer<Ctx>>,
    positions: Positions,
    decoder: Option<JsonLinesDecoder>,
    schema: Arc<Schema>,
    started: bool,
    /// Bounded mode: the high watermark to reach per partition.
    targets: Option<HashMap<(String, i32), i64>>,
    /// Offsets to start from, set by `restore`/`seek` before the first read.
    start_at: HashMap<(String, i32), i64>,
    event_time: Option<EventTimeExtractor>,
    bad: u64,
    lag: u64,
    /// Payload bytes decoded, for the bytes metric.
    bytes: u64,
    /// High watermarks per partition, kept current by the statistics callback.
    highs: Highs,
    /// A bad record met under `errors=fail`: its location and reason.
    /// Messages after it were taken from the consumer, so the reader stops here.
    failed: Option<(String, String)>,
}

/// Reads records from Kafka; see the crate docs for the commit protocol.
pub struct KafkaReader {
    state: Option<State>,
    positions: Positions,
    consumer: Arc<BaseConsumer<Ctx>>,
    opts: Arc<KafkaSourceOptions>,
    /// When offsets were last committed (`None`: not yet, so the first commit is due).
    last_commit: Option<Instant>,
    exhausted: bool,
    metrics: SourceMetrics,
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("topics", &self.opts.common.topics)
            .field("group", &self.opts.group_id)
            .finish()
    }
}

impl KafkaReader {
    fn new(opts: Arc<KafkaSourceOptions>) -> Result<Self> {
        let positions: Positions = Arc::default();
        let highs: Highs = Arc::default();
        let consumer: BaseConsumer<Ctx> = consumer_config(&opts)
            .create_with_context(Ctx {
                positions: positions.clone(),
                highs: highs.clone(),
                revocations: Default::default(),
            })
            .map_err(|e| kafka_error(&opts.common.brokers, "cannot create a consumer", e))?;
        let consumer = Arc::new(consumer);
        let schema = Arc::new(match opts.format {
            PayloadFormat::Json => Schema::empty(),
            PayloadFormat::String => {
                Schema::new(vec![FieldDefinition::optional("value", DataType::String)])
            }
            PayloadFormat::Raw => {
                Schema::new(vec![FieldDefinition::optional("value", DataType::Bytes)])
            }
        });
        let state = State {
            opts: opts.clone(),
            consumer: consumer.clone(),
            positions: positions.clone(),
            decoder: None,
            schema,
            started: false,
            targets: None,
            start_at: HashMap::new(),
            event_time: opts
                .event_time
                .clone()
                .map(|c| EventTimeExtractor::new(c, 1000)),
            bad: 0,
            lag: 0,
            bytes: 0,
            highs,
            failed: None,
        };
        Ok(KafkaReader {
            state: Some(state),
            positions,
            consumer,
            opts,
            last_commit: None,
            exhausted: false,
            metrics: SourceMetrics::new("kafka"),
        })
    }

    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut State) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut state = self.state.take().ok_or_else(|| {
            Error::State("the Kafka reader was interrupted in the middle of a read".into())
        })?;
        let (state, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut state);
            (state, r)
        })
        .await
        .map_err(|e| Error::State(format!("Kafka read task failed: {e}")))?;
        self.state = Some(state);
        result
    }

    fn state_mut(&mut self) -> Result<&mut State> {
        self.state.as_mut().ok_or_else(|| {
            Error::State("the Kafka reader was interrupted in the middle of a read".into())
        })
    }
}

impl State {
    fn brokers(&self) -> &str {
        &self.opts.common.brokers
    }

    /// Subscribes (streaming) or assigns every partition up to its high watermark (bounded).
    fn start(&mut self) -> Result<()> {
        if self.started {
            return Ok(());
        }
        let timeout = Duration::from_secs(10);
        if !self.start_at.is_empty() && !self.opts.bounded {
            // Positions restored from a checkpoint become the group's committed offsets.
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in &self.start_at {
                tpl.add_partition_offset(t, *p, Offset::Offset(*o))
                    .map_err(|e| kafka_error(self.brokers(), "restore", e))?;
            }
            self.consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| kafka_error(self.brokers(), "committing restored offsets", e))?;
        }
        if self.opts.bounded {
            let mut tpl = TopicPartitionList::new();
            let mut targets = HashMap::new();
            for topic in &self.opts.common.topics {
                let md = self
                    .consumer
                    .fetch_metadata(Some(topic), timeout)
                    .map_err(|e| kafka_error(self.brokers(), "metadata", e))?;
                for t in md.topics() {
                    for p in t.partitions() {
                        let (_, high) = self
                            .consumer
                            .fetch_watermarks(topic, p.id(), timeout)
                            .map_err(|e| kafka_error(self.brokers(), "watermarks", e))?;
                        targets.insert((topic.clone(), p.id()), high);
                        tpl.add_partition(topic, p.id());
                    }
                }
            }
            // Start where the group is (or the checkpoint says), else by the reset policy.
            let committed = self
                .consumer
                .committed_offsets(tpl.clone(), timeout)
                .map_err(|e| kafka_error(self.brokers(), "committed offsets", e))?;
            let mut assign = TopicPartitionList::new();
            for e in committed.elements() {
                let key = (e.topic().to_owned(), e.partition());
                let start = match (self.start_at.get(&key), e.offset()) {
                    (Some(o), _) => Offset::Offset(*o),
                    (None, Offset::Offset(o)) => Offset::Offset(o),
                    (None, _) => match self.opts.reset {
                        ResetPolicy::Earliest => Offset::Beginning,
                        ResetPolicy::Latest => Offset::End,
                        ResetPolicy::None => {
                            return Err(Error::Offset(format!(
                                "{}/{} has no committed offset and reset_policy=none",
                                e.topic(),
                                e.partition()
                            )));
                        }
                    },
                };
                assign
                    .add_partition_offset(e.topic(), e.partition(), start)
                    .map_err(|e| kafka_error(self.brokers(), "assign", e))?;
                if let Offset::Offset(o) = start
                    && let Ok(mut p) = self.positions.lock()
                {
                    p.insert(key.clone(), o);
                }
                if matches!(start, Offset::End)
                    && let Ok(mut p) = self.positions.lock()
                {
                    p.insert(key.clone(), targets[&key]);
                }
            }
            self.consumer
                .assign(&assign)
                .map_err(|e| kafka_error(self.brokers(), "assign", e))?;
            self.targets = Some(targets);
        } else {
            let topics: Vec<&str> = self.opts.common.topics.iter().map(String::as_str).collect();
            self.consumer
                .subscribe(&topics)
                .map_err(|e| kafka_error(self.brokers(), "subscribe", e))?;
        }
        self.started = true;
        Ok(())
    }

    /// The error of a bad record met under `errors=fail`, once it is reported.
    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some((location, message)) => Err(Error::decode(location.clone(), message.clone())),
            None => Ok(()),
        }
    }

    /// Whether a bounded read has reached every target.
    fn done(&self) -> bool {
        let Some(targets) = &self.targets else {
            return false;
        };
        let Ok(p) = self.positions.lock() else {
            return false;
        };
        targets
            .iter()
            .all(|(k, high)| *high == 0 || p.get(k).is_some_and(|o| o >= high))
    }

    fn poll(&mut self, max: usize) -> Result<Vec<StreamRecord>> {
        self.check_failed()?;
        self.start()?;
        let deadline = Instant::now() + self.opts.poll_timeout;
        let mut out = Vec::with_capacity(max.min(8192));
        let now = chrono::Utc::now();
        let mut payloads = Vec::new();
        // A bounded read checks whether it is done only when nothing more came
        // (it scans every partition): never per message.
        while out.len() + payloads.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            // Once a batch has started, wait a little for more rather than
            // returning on the first momentarily empty queue: batches stay full.
            let wait = if payloads.is_empty() {
                left
            } else {
                left.min(Duration::from_millis(5))
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    let key = (m.topic().to_owned(), m.partition());
                    if let Some(high) = self.targets.as_ref().and_then(|t| t.get(&key))
                        && m.offset() >= *high
                    {
                        // Past what a bounded read covers.
                        continue;
                    }
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|hd| {
                                    (
                                        hd.key.to_owned(),
                                        hd.value.map(<[u8]>::to_vec).unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    payloads.push(Raw {
                        topic: key.0,
                        partition: key.1,
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        timestamp_ms: m.timestamp().to_millis(),
                        headers,
                    });
                    if out.len() + payloads.len() >= max {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Partition EOF and transient broker errors are not data errors.
                    tracing::warn!("Kafka consumer: {e}");
                    if !payloads.is_empty() {
                        break;
                    }
                }
                None => {
                    // None also follows a rebalance or commit event: keep waiting
                    // until the deadline, unless a bounded read is complete.
                    if !payloads.is_empty() || Instant::now() >= deadline || self.done() {
                        break;
                    }
                }
            }
        }
        if !self.opts.bounded && !payloads.is_empty() {
            // A rebalance served during this poll may have taken partitions
            // away: their new owner reads those messages, this reader must not.
            if let Ok(assignment) = self.consumer.assignment() {
                payloads.retain(|r| assignment.find_partition(&r.topic, r.partition).is_some());
            }
        }
        self.decode(payloads, now, &mut out)?;
        self.update_lag();
        if out.is_empty() {
            self.check_failed()?;
        }
        Ok(out)
    }

    fn decode(
        &mut self,
        raws: Vec<Raw>,
        now: chrono::DateTime<chrono::Utc>,
        out: &mut Vec<StreamRecord>,
    ) -> Result<()> {
        if raws.is_empty() {
            return Ok(());
        }
        if self.opts.format == PayloadFormat::Json && self.decoder.is_none() {
            // Infer the schema from the first messages.
            let mut sample = Vec::new();
            for r in raws.iter().take(1000) {
                sample.extend_from_slice(&r.payload);
                sample.push(b'\n');
            }
            let inferred =
                format::infer(&FormatOptions::new(FileFormat::JsonLines), &sample, true)?;
            self.schema = inferred.schema.clone();
            self.decoder = Some(JsonLinesDecoder::new(inferred.schema, false));
        }
        let mut frames = Vec::with_capacity(1);
        // Positions move for records handed out (or skipped), applied once per batch.
        let mut advanced: Vec<((String, i32), i64)> = Vec::with_capacity(raws.len().min(1024));
        for raw in raws {
            self.bytes += raw.payload.len() as u64;
            let values = match self.opts.format {
                PayloadFormat::Raw => Ok(vec![FieldValue::Bytes(raw.payload)]),
                PayloadFormat::String => String::from_utf8(raw.payload)
                    .map(|s| vec![FieldValue::String(s.into())])
                    .map_err(|e| format!("payload is not UTF-8: {e}")),
                PayloadFormat::Json => {
                    frames.clear();
                    let decoder = self
                        .decoder
                        .as_mut()
                        .ok_or_else(|| Error::State("no JSON decoder".into()))?;
                    decoder.decode(&raw.payload, true, 1, &mut frames);
                    self.schema = decoder.schema();
                    match frames.pop() {
                        Some(f) => f.result,
                        None => Err("empty payload".into()),
                    }
                }
            };
            match values {
                Ok(values) => {
                    let mut record = StreamRecord::from_parts_at(self.schema.clone(), values, now);
                    record.partition = raw.partition;
                    record.offset = raw.offset;
                    record.key = raw.key;
                    record.headers = raw.headers;
                    record.event_time = raw
                        .timestamp_ms
                        .and_then(chrono::DateTime::from_timestamp_millis);
                    if let Some(et) = &mut self.event_time {
                        et.apply(&mut record);
                    }
                    out.push(record);
                }
                Err(message) => {
                    self.bad += 1;
                    let location = format!("{}/{}@{}", raw.topic, raw.partition, raw.offset);
                    if self.opts.errors == BadRecordPolicy::Fail {
                        // The good records before it are handed out; the position
                        // stays on the bad one, and every later read reports it.
                        self.failed = Some((location, message));
                        break;
                    }
                    if self.bad == 1 || self.bad.is_multiple_of(1000) {
                        tracing::warn!(
                            bad_records = self.bad,
                            "skipping bad message at {location}: {message}"
                        );
                    }
                }
            }
            advanced.push(((raw.topic, raw.partition), raw.offset + 1));
        }
        if let Ok(mut p) = self.positions.lock() {
            p.extend(advanced);
        }
        Ok(())
    }

    /// High watermark minus position, over the partitions this reader holds.
    /// High watermarks come from librdkafka's statistics (every second, no
    /// extra round trip); a partition not in them yet is fetched once.
    fn update_lag(&mut self) {
        let Ok(p) = self.positions.lock() else { return };
        let Ok(mut highs) = self.highs.lock() else {
            return;
        };
        let mut lag = 0;
        // An unknown high watermark keeps the previous lag rather than counting as zero.
        let mut known = true;
        for ((topic, partition), next) in p.iter() {
            let key = (topic.clone(), *partition);
            if !highs.contains_key(&key) {
                match self.consumer.fetch_watermarks(
                    topic.as_str(),
                    *partition,
                    Duration::from_secs(3),
                ) {
                    Ok((_, high)) => {
                        highs.insert(key.clone(), high);
                    }
                    Err(e) => {
                        tracing::debug!(%topic, partition, "cannot fetch watermarks for lag: {e}")
                    }
                }
            }
            match highs.get(&key) {
                Some(high) => lag += (high - next).max(0) as u64,
                None => known = false,
            }
        }
        if known {
            self.lag = lag;
        }
    }
}

/// A reader dropped without `close()` still commits the offsets it stored,
/// which are only ever offsets of records the sink accepted.
impl Drop for KafkaReader {
    fn drop(&mut self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!("committing stored offsets on drop failed: {e}"),
        }
    }
}

/// A message copied out of librdkafka's buffers.
struct Raw {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    timestamp_ms: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

#[async_trait]
impl DataReader for KafkaReader {
    async fn read(&mut self) -> Result<Option<StreamRecord>> {
        Ok(self.read_batch(1).await?.pop())
    }

    async fn read_batch(&mut self, max_size: usize) -> Result<Vec<StreamRecord>> {
        if self.exhausted {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let max = max_size.max(1);
        let bytes_before = self.state_mut()?.bytes;
        let records = self.blocking(move |s| s.poll(max)).await?;
        let (done, lag, bytes) = {
            let s = self.state_mut()?;
            (s.done(), s.lag, s.bytes - bytes_before)
        };
        // Every record up to the targets is in this batch or an earlier one:
        // no further read (which would wait a whole poll timeout for nothing).
        self.exhausted = done;
        self.metrics
            .record_batch(records.len(), bytes, started.elapsed());
        self.metrics.set_lag("all", Lag::Records(lag));
        Ok(records)
    }

    async fn commit(&mut self) -> Result<()> {
        let tpl = {
            let p = self
                .positions
                .lock()
                .map_err(|_| Error::State("positions lock poisoned".into()))?;
            let assignment = self
                .consumer
                .assignment()
                .map_err(|e| kafka_error(&self.opts.common.brokers, "assignment", e))?;
            let mut tpl = TopicPartitionList::new();
            for ((t, part), o) in p.iter() {
                if assignment.find_partition(t, *part).is_some() {
                    tpl.add_partition_offset(t, *part, Offset::Offset(*o))
                        .map_err(|e| kafka_error(&self.opts.common.brokers, "commit", e))?;
                }
            }
            tpl
        };
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .store_offsets(&tpl)
            .map_err(|e| kafka_error(&self.opts.common.brokers, "storing offsets", e))?;
        let due = self.opts.commit_interval.is_zero()
            || self
                .last_commit
                .is_none_or(|t| t.elapsed() >= self.opts.commit_interval);
        if due && !self.opts.auto_commit {
            let consumer = self.consumer.clone();
            let result =
                tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
                    .await
                    .map_err(|e| Error::State(format!("commit task failed: {e}")))?;
            match result {
                Ok(()) => self.last_commit = Some(Instant::now()),
                // The offsets are stored: they are committed before the
                // partitions are revoked, or by the next commit, and the
                // runner's checkpoint has them too. Nothing is lost.
                Err(KafkaError::ConsumerCommit(code)) if commit_can_wait(code) => {
                    tracing::info!(
                        "commit deferred ({code}): the group is rebalancing or its coordinator is unreachable"
                    )
                }
                Err(e) => return Err(kafka_error(&self.opts.common.brokers, "commit", e)),
            }
        }
        Ok(())
    }

    async fn seek(&mut self, offset: SourceOffset) -> Result<()> {
        self.restore(SourcePosition::new(vec![offset])).await
    }

    async fn has_more(&self) -> Result<bool> {
        Ok(!self.exhausted)
    }

    fn position(&self) -> Result<SourcePosition> {
        let p = self
            .positions
            .lock()
            .map_err(|_| Error::State("positions lock poisoned".into()))?;
        // In topic and partition order, so that positions compare and print stably.
        let mut entries: Vec<_> = p.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let offsets = entries
            .into_iter()
            .map(|((topic, partition), offset)| SourceOffset::Kafka {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        Ok(SourcePosition::new(offsets))
    }

    async fn restore(&mut self, position: SourcePosition) -> Result<()> {
        let mut at = HashMap::new();
        for o in &position.offsets {
            let (topic, partition, offset) = kafka_offset(o)?;
            at.insert((topic.to_owned(), partition), offset);
        }
        let state = self.state_mut()?;
        if !state.started {
            state.start_at.extend(at);
            return Ok(());
        }
        // Already reading: seek the partitions this reader holds.
        let consumer = self.consumer.clone();
        let positions = self.positions.clone();
        tokio::task::spawn_blocking(move || {
            for ((topic, partition), offset) in at {
                consumer
                    .seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(10))
                    .map_err(|e| Error::Offset(format!("cannot seek {topic}/{partition} to {offset}: {e} (is the partition assigned to this reader?)")))?;
                if let Ok(mut p) = positions.lock() {
                    p.insert((topic, partition), offset);
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::State(format!("seek task failed: {e}")))?
    }

    fn lag(&self) -> Option<Lag> {
        self.state.as_ref().map(|s| Lag::Records(s.lag))
    }

    fn source_link(&self) -> Option<SourceLink> {
        Some(Arc::new(ConsumerLink {
            consumer: self.consumer.clone(),
            topics: self.opts.common.topics.clone(),
            brokers: self.opts.common.brokers.clone(),
            group: self.opts.group_id.clone(),
        }))
    }

    async fn close(&mut self) -> Result<()> {
        let consumer = self.consumer.clone();
        let brokers = self.opts.common.brokers.clone();
        tokio::task::spawn_blocking(move || {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
                Err(e) => Err(kafka_error(&brokers, "final commit", e)),
            }
        })
        .await
        .map_err(|e| Error::State(format!("close task failed: {e}")))?
    }
}
