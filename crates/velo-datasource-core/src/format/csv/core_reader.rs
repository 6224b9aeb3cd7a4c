//! csv-core readers built once per set of options and reused.
//!
//! Building a `csv_core::Reader` (its state machine) costs about 270,000
//! instructions, and every opened CSV file needed two: one to infer its
//! schema, one for its decoder. Reading a directory of 20,000 small files,
//! that was half of the time. A reader is put back here when its user is
//! dropped and taken out again [`reset`](csv_core::Reader::reset), which
//! makes it as good as new (a built reader cannot be cloned: its clone is
//! not complete).

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError};

use csv_core::ReaderBuilder;

use super::FormatOptions;

/// The options a reader is built with: delimiter, quote and escape.
type Key = (u8, u8, Option<u8>);

/// Readers kept for reuse; a few sets of options at most are in use at once.
static BUILT: Mutex<Vec<(Key, csv_core::Reader)>> = Mutex::new(Vec::new());

/// How many readers are kept.
const KEEP: usize = 8;

/// A csv-core reader for some options, fresh or reused; it goes back to
/// be reused when dropped.
#[derive(Debug)]
pub(super) struct CoreReader {
    key: Key,
    /// `None` only while it is dropped.
    rdr: Option<csv_core::Reader>,
}

impl CoreReader {
    /// A reader for `options`, in its initial state.
    pub(super) fn new(options: &FormatOptions) -> Self {
        let key = (options.delimiter, options.quote, options.escape);
        let kept = {
            let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
            built
                .iter()
                .rposition(|(k, _)| *k == key)
                .map(|i| built.swap_remove(i).1)
        };
        let rdr = match kept {
            Some(mut rdr) => {
                rdr.reset();
                rdr
            }
            None => {
                let mut b = ReaderBuilder::new();
                b.delimiter(key.0).quote(key.1);
                if let Some(e) = key.2 {
                    b.escape(Some(e)).double_quote(false);
                }
                b.build()
            }
        };
        CoreReader {
            key,
            rdr: Some(rdr),
        }
    }
}

impl Deref for CoreReader {
    type Target = csv_core::Reader;

    fn deref(&self) -> &csv_core::Reader {
        self.rdr.as_ref().expect("taken only on drop")
    }
}

impl DerefMut for CoreReader {
    fn deref_mut(&mut self) -> &mut csv_core::Reader {
        self.rdr.as_mut().expect("taken only on drop")
    }
}

impl Drop for CoreReader {
    fn drop(&mut self) {
        if let Some(rdr) = self.rdr.take() {
            let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
            if built.len() < KEEP {
                built.push((self.key, rdr));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use csv_core::ReadRecordResult;

    use super::*;
    use crate::config::FileFormat;

    /// The fields of the first record of `input`, read by `rdr`.
    fn first_record(rdr: &mut csv_core::Reader, input: &[u8]) -> Vec<String> {
        let (mut out, mut ends) = ([0u8; 256], [0usize; 16]);
        let (res, _, _, n) = rdr.read_record(input, &mut out, &mut ends);
        assert_eq!(res, ReadRecordResult::Record);
        let mut start = 0;
        ends[..n]
            .iter()
            .map(|&end| {
                let field = String::from_utf8_lossy(&out[start..end]).into_owned();
                start = end;
                field
            })
            .collect()
    }

    #[test]
    fn a_reused_reader_starts_fresh_and_keeps_its_options() {
        let comma = FormatOptions::new(FileFormat::Csv);
        let mut semicolon = FormatOptions::new(FileFormat::Csv);
        semicolon.delimiter = b';';
        for _ in 0..3 {
            // Left inside a quoted field: the next user must not go on from there.
            let mut rdr = CoreReader::new(&comma);
            let (mut out, mut ends) = ([0u8; 64], [0usize; 4]);
            let (res, ..) = rdr.read_record(b"\"abc", &mut out, &mut ends);
            assert_eq!(res, ReadRecordResult::InputEmpty);
            drop(rdr);
            let mut rdr = CoreReader::new(&semicolon);
            assert_eq!(first_record(&mut rdr, b"a;b,c\n"), ["a", "b,c"]);
            drop(rdr);
            let mut rdr = CoreReader::new(&comma);
            assert_eq!(first_record(&mut rdr, b"x,y\n"), ["x", "y"]);
        }
    }
}
