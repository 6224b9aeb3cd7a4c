#![doc = include_str!("../README.md")]

mod link;
mod options;
mod sink;
mod source;

use velo_datasource_core::{SinkPlugin, SourcePlugin, inventory};

pub use options::{KafkaSinkOptions, KafkaSourceOptions, PayloadFormat, ResetPolicy};
pub use sink::{KafkaSink, KafkaWriter};
pub use source::{KafkaDataSource, KafkaReader};

inventory::submit! {
    SourcePlugin {
        name: "kafka",
        description: "Kafka topics: consumer groups, offsets committed after the sink, bounded reads",
        schemes: &["kafka"],
        create: || Box::new(KafkaDataSource::new()),
    }
}

inventory::submit! {
    SinkPlugin {
        name: "kafka",
        description: "Kafka topics: idempotent producer, keys, headers, transactions",
        schemes: &["kafka"],
        create: || Box::new(KafkaSink::new()),
    }
}
