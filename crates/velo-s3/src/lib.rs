#![doc = include_str!("../README.md")]

mod options;
mod sink;
mod source;

use velo_datasource_core::{SinkPlugin, SourcePlugin, inventory};

pub use options::{OnRewrite, S3Options, ScanMode};
pub use sink::{S3Sink, S3Writer};
pub use source::{InProgress, ListingState, S3Reader, S3Source};

inventory::submit! {
    SourcePlugin {
        name: "s3",
        description: "Object stores (S3, GCS, Azure): incremental listing, byte-offset resume, parallel downloads",
        schemes: &["s3", "gs", "az"],
        create: || Box::new(S3Source::new()),
    }
}

inventory::submit! {
    SinkPlugin {
        name: "s3",
        description: "Object stores (S3, GCS, Azure): rolling multipart objects visible on commit",
        schemes: &["s3", "gs", "az"],
        create: || Box::new(S3Sink::new()),
    }
}
