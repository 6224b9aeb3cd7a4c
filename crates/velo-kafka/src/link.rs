//! Kafka → Kafka exactly-once: what the source hands the sink so that the
//! consumer group's offsets are committed inside the producer's transaction.
//!
//! The reader offers a [`ConsumerLink`] through `DataReader::source_link`;
//! a transactional writer keeps it. At each commit the writer sends the
//! offsets of the records it wrote, with the consumer's current group
//! metadata (generation and member, so a zombie from an older generation is
//! fenced), into the transaction, and commits data and offsets together.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::{Offset, TopicPartitionList};
use velo_datasource_core::{Error, Result, SourceOffset, SourcePosition};

use crate::source::{Ctx, kafka_error, kafka_offset};

/// The consumer behind a Kafka reader, as seen by a transactional writer.
pub(crate) struct ConsumerLink {
    pub(crate) consumer: Arc<BaseConsumer<Ctx>>,
    pub(crate) topics: Vec<String>,
    pub(crate) brokers: String,
    pub(crate) group: String,
}

impl std::fmt::Debug for ConsumerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerLink")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish()
    }
}

impl ConsumerLink {
    /// How many rebalances have taken partitions from this consumer so far.
    pub(crate) fn revocations(&self) -> u64 {
        self.consumer
            .context()
            .revocations
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The group's generation and member now (they change with each rebalance).
    pub(crate) fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        self.consumer.group_metadata().ok_or_else(|| {
            Error::State(format!(
                "the consumer of group `{}` has no group metadata",
                self.group
            ))
        })
    }

    /// The Kafka offsets of `position` for the partitions this consumer
    /// owns. (A transaction that spans a rebalance is aborted before this is
    /// asked; the filter only keeps a stale entry out.)
    pub(crate) fn owned_offsets(&self, position: &SourcePosition) -> Result<TopicPartitionList> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| kafka_error(&self.brokers, "assignment", e))?;
        let mut tpl = TopicPartitionList::new();
        for o in &position.offsets {
            let (topic, partition, offset) = kafka_offset(o)?;
            if assignment.find_partition(topic, partition).is_some() {
                tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
                    .map_err(|e| kafka_error(&self.brokers, "offsets", e))?;
            }
        }
        Ok(tpl)
    }

    /// The offsets the group has committed for every partition of the
    /// source's topics (blocking: call from a blocking task). `None` for a
    /// regex subscription, whose partitions are only known once assigned.
    pub(crate) fn committed(&self, timeout: Duration) -> Result<Option<SourcePosition>> {
        if self.topics.iter().any(|t| t.starts_with('^')) {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        for topic in &self.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| kafka_error(&self.brokers, "metadata", e))?;
            for t in md.topics() {
                for p in t.partitions() {
                    tpl.add_partition(topic, p.id());
                }
            }
        }
        let committed = self
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| kafka_error(&self.brokers, "committed offsets", e))?;
        let offsets = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(SourceOffset::Kafka {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    offset: o,
                }),
                _ => None,
            })
            .collect();
        Ok(Some(SourcePosition::new(offsets)))
    }
}
