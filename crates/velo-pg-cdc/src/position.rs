//! LSNs and the CDC reader's position.
//!
//! The server only knows transaction boundaries: its slot resends every
//! transaction whose commit is past `confirmed_flush_lsn`. A pipeline batch can
//! end inside a large transaction, so the position also counts the changes of
//! that transaction already delivered; a restart skips exactly those and
//! repeats nothing.

use std::fmt;
use std::str::FromStr;

use velo_datasource_core::{DatabaseCursor, Error, Result, SourceOffset};

/// A PostgreSQL write-ahead log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an LSN (expected X/Y in hex, e.g. 0/16B3748)");
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// Where a CDC reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CdcPosition {
    /// End LSN of the last transaction delivered whole: what may be
    /// acknowledged to the server.
    pub lsn: Lsn,
    /// The transaction delivered in part: its commit LSN (`Begin.final_lsn`)
    /// and how many of its changes were delivered.
    pub partial: Option<(Lsn, u64)>,
    /// Inside the initial snapshot: a restart takes the snapshot again.
    pub in_snapshot: bool,
}

impl CdcPosition {
    /// Whether a transaction committing at `final_lsn` was delivered whole.
    pub fn covers_transaction(&self, final_lsn: Lsn) -> bool {
        final_lsn < self.lsn
    }

    /// How many changes of the transaction committing at `final_lsn` to skip.
    pub fn changes_to_skip(&self, final_lsn: Lsn) -> u64 {
        match self.partial {
            Some((lsn, n)) if lsn == final_lsn => n,
            _ => 0,
        }
    }

    /// The position as a core offset of `table` (the slot name).
    pub fn to_offset(&self, slot: &str) -> SourceOffset {
        SourceOffset::Database {
            table: slot.to_owned(),
            cursor: DatabaseCursor::LogSequenceNumber(self.to_string()),
        }
    }

    /// The position in a core offset, checked to belong to `slot`.
    pub fn from_offset(offset: &SourceOffset, slot: &str) -> Result<Self> {
        match offset {
            SourceOffset::Database {
                table,
                cursor: DatabaseCursor::LogSequenceNumber(text),
            } => {
                if table != slot {
                    return Err(Error::Offset(format!(
                        "the offset belongs to replication slot `{table}`, this source reads slot `{slot}`"
                    )));
                }
                text.parse().map_err(Error::Offset)
            }
            other => Err(Error::Offset(format!(
                "a PostgreSQL CDC source takes an LSN offset, not {}",
                other.describe()
            ))),
        }
    }
}

/// `0/16B3748`, or `0/16B3748;txn=0/16B3800;seen=120` inside a transaction,
/// or `snapshot` during the initial snapshot.
impl fmt::Display for CdcPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.in_snapshot {
            return f.write_str("snapshot");
        }
        write!(f, "{}", self.lsn)?;
        if let Some((txn, seen)) = self.partial {
            write!(f, ";txn={txn};seen={seen}")?;
        }
        Ok(())
    }
}

impl FromStr for CdcPosition {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "snapshot" {
            return Ok(CdcPosition {
                in_snapshot: true,
                ..CdcPosition::default()
            });
        }
        let mut parts = s.split(';');
        let lsn = parts.next().unwrap_or_default().parse()?;
        let (mut txn, mut seen) = (None, None);
        for part in parts {
            match part.split_once('=') {
                Some(("txn", v)) => txn = Some(v.parse::<Lsn>()?),
                Some(("seen", v)) => {
                    seen = Some(v.parse::<u64>().map_err(|_| {
                        format!("`{v}` in position `{s}` is not a count of changes")
                    })?)
                }
                _ => return Err(format!("unknown part `{part}` in CDC position `{s}`")),
            }
        }
        let partial = match (txn, seen) {
            (Some(t), Some(n)) => Some((t, n)),
            (None, None) => None,
            _ => return Err(format!("CDC position `{s}` needs both txn= and seen=")),
        };
        Ok(CdcPosition {
            lsn,
            partial,
            in_snapshot: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trip() {
        assert_eq!("0/16B3748".parse::<Lsn>().unwrap(), Lsn(0x16B_3748));
        assert_eq!(Lsn(0x1_0000_00FF).to_string(), "1/FF");
        assert!("16B3748".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn position_round_trip_and_rules() {
        for text in ["0/16B3748", "0/16B3748;txn=0/16B3800;seen=120", "snapshot"] {
            let p: CdcPosition = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
            let offset = p.to_offset("slot");
            assert_eq!(CdcPosition::from_offset(&offset, "slot").unwrap(), p);
            assert!(CdcPosition::from_offset(&offset, "other").is_err());
        }
        let p: CdcPosition = "0/100;txn=0/200;seen=3".parse().unwrap();
        assert!(p.covers_transaction(Lsn(0xF0)));
        assert!(!p.covers_transaction(Lsn(0x200)));
        assert_eq!(p.changes_to_skip(Lsn(0x200)), 3);
        assert_eq!(p.changes_to_skip(Lsn(0x300)), 0);
        assert!("0/1;txn=0/2".parse::<CdcPosition>().is_err());
        assert!("0/1;foo=1".parse::<CdcPosition>().is_err());
    }
}
