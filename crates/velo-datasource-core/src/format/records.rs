//! Whole-file record formats: Parquet and Avro object container files.
//!
//! Unlike CSV and JSON these cannot be decoded from an arbitrary run of
//! bytes, so they are read record by record from the start of a file, and a
//! position is a count of records: resuming skips that many (whole Parquet
//! row groups are skipped from their metadata, without decoding).

use std::sync::Arc;

use crate::error::Result;
use crate::schema::Schema;
use crate::value::FieldValue;

/// One decoded row, or why it could not be decoded.
pub type Row = std::result::Result<Vec<FieldValue>, String>;

/// Reads the records of one Parquet or Avro file in order.
pub trait RecordFileReader: Send {
    /// The file's schema, from its own metadata.
    fn schema(&self) -> Arc<Schema>;

    /// Appends up to `max` rows to `out`; appends none at the end of the file.
    fn next_rows(&mut self, max: usize, out: &mut Vec<Row>) -> Result<()>;

    /// Skips `n` rows (to resume after them).
    fn skip(&mut self, n: u64) -> Result<()>;
}

impl std::fmt::Debug for dyn RecordFileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordFileReader")
            .field("schema", &self.schema())
            .finish()
    }
}

/// Builds an `i128` from big-endian two's-complement bytes (Parquet and Avro decimals).
#[cfg(any(feature = "parquet", feature = "avro"))]
pub(crate) fn i128_from_be(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(buf))
}

/// A decimal from an unscaled big-endian integer and a scale.
#[cfg(any(feature = "parquet", feature = "avro"))]
pub(crate) fn decimal(bytes: &[u8], scale: u32) -> std::result::Result<FieldValue, String> {
    let unscaled = i128_from_be(bytes).ok_or("decimal wider than 128 bits")?;
    rust_decimal::Decimal::try_from_i128_with_scale(unscaled, scale)
        .map(FieldValue::Decimal)
        .map_err(|e| format!("decimal out of range: {e}"))
}

#[cfg(all(test, any(feature = "parquet", feature = "avro")))]
mod tests {
    use super::*;

    #[test]
    fn big_endian_decimals() {
        assert_eq!(i128_from_be(&[0x01, 0x00]), Some(256));
        assert_eq!(i128_from_be(&[0xff, 0xfe]), Some(-2));
        assert_eq!(decimal(&[0x04, 0xd2], 2).unwrap().to_string(), "12.34");
        assert!(i128_from_be(&[0; 17]).is_none());
    }
}
