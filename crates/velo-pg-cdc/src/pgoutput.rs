//! Decoder of the `pgoutput` logical replication messages (protocol version 1).
//!
//! Input is the payload of one `XLogData` message; output borrows from it, so
//! decoding a row allocates only the column vector. The layout follows
//! PostgreSQL's "Logical Replication Message Formats" chapter. Every error
//! names the message and the byte where the payload stopped making sense.

use std::fmt;

/// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// One decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// `B`: a transaction starts.
    Begin {
        /// LSN of the transaction's commit record.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
        /// Transaction id.
        xid: u32,
    },
    /// `C`: a transaction ends.
    Commit {
        /// LSN of the commit record.
        commit_lsn: u64,
        /// LSN just past the commit record: the position to acknowledge.
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// `O`: the transaction came from another replication origin.
    Origin {
        /// Commit LSN on the origin server.
        commit_lsn: u64,
        /// Origin name.
        name: &'a str,
    },
    /// `R`: the shape of a table, sent before its first change and after DDL.
    Relation(Relation),
    /// `Y`: a non-built-in type used by a relation.
    Type {
        /// Type OID.
        oid: u32,
        /// Schema of the type.
        namespace: &'a str,
        /// Type name.
        name: &'a str,
    },
    /// `I`: a row was inserted.
    Insert {
        /// Relation OID.
        relation: u32,
        /// The new row.
        new: Tuple<'a>,
    },
    /// `U`: a row was updated.
    Update {
        /// Relation OID.
        relation: u32,
        /// The old key (`K`) or whole old row (`O`, REPLICA IDENTITY FULL),
        /// sent only when the key changed or the identity is FULL.
        old: Option<(OldKind, Tuple<'a>)>,
        /// The new row.
        new: Tuple<'a>,
    },
    /// `D`: a row was deleted.
    Delete {
        /// Relation OID.
        relation: u32,
        /// Whether `old` holds the key only or the whole row.
        kind: OldKind,
        /// The old key or row.
        old: Tuple<'a>,
    },
    /// `T`: tables were truncated.
    Truncate {
        /// `TRUNCATE ... CASCADE`.
        cascade: bool,
        /// `TRUNCATE ... RESTART IDENTITY`.
        restart_identity: bool,
        /// Relation OIDs.
        relations: Vec<u32>,
    },
    /// `M`: a logical message from `pg_logical_emit_message`.
    LogicalMessage {
        /// Emitted inside a transaction (delivered at its commit).
        transactional: bool,
        /// LSN of the message.
        lsn: u64,
        /// Application-chosen prefix.
        prefix: &'a str,
        /// Content.
        content: &'a [u8],
    },
}

/// What the old image of an update or delete holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// The replica identity key columns only (others are null).
    Key,
    /// The whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// A table's shape as the server announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub oid: u32,
    /// Schema name.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Columns in table order.
    pub columns: Vec<Column>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity key.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (e.g. varchar length, numeric precision).
    pub type_modifier: i32,
}

/// The values of one row, borrowed from the message.
pub type Tuple<'a> = Vec<TupleValue<'a>>;

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change: the server did not send it.
    UnchangedToast,
    /// Text representation.
    Text(&'a [u8]),
    /// Binary representation (only with the `binary` option).
    Binary(&'a [u8]),
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Message tag, e.g. `'I'`.
    pub tag: u8,
    /// Byte offset in the payload where decoding stopped.
    pub at: usize,
    /// What was expected.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pgoutput message '{}' at byte {}: {}",
            self.tag.escape_ascii(),
            self.at,
            self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one `pgoutput` message.
pub fn decode(payload: &[u8]) -> Result<Message<'_>, DecodeError> {
    let Some(&tag) = payload.first() else {
        return Err(DecodeError {
            tag: b'?',
            at: 0,
            reason: "empty message".into(),
        });
    };
    let mut r = Reader {
        buf: payload,
        pos: 1,
        tag,
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time: r.i64()?,
            }
        }
        b'O' => Message::Origin {
            commit_lsn: r.u64()?,
            name: r.cstr()?,
        },
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.cstr()?.to_owned();
            let name = r.cstr()?.to_owned();
            let replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let flags = r.u8()?;
                columns.push(Column {
                    key: flags & 1 == 1,
                    name: r.cstr()?.to_owned(),
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            oid: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => Some((OldKind::Key, r.tuple_then(b'N')?)),
                b'O' => Some((OldKind::Full, r.tuple_then(b'N')?)),
                b'N' => None,
                other => return Err(r.error(format!("expected K, O or N, found {other:#04x}"))),
            };
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = match r.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => return Err(r.error(format!("expected K or O, found {other:#04x}"))),
            };
            Message::Delete {
                relation,
                kind,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate {
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
                relations,
            }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            Message::LogicalMessage {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
        other => {
            return Err(r.error(format!(
                "unknown message type {:?} (is the slot using pgoutput protocol version 1?)",
                other as char
            )));
        }
    };
    if r.pos != payload.len() {
        return Err(r.error(format!(
            "{} trailing bytes after the message",
            payload.len() - r.pos
        )));
    }
    Ok(message)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    tag: u8,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: String) -> DecodeError {
        DecodeError {
            tag: self.tag,
            at: self.pos,
            reason,
        }
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.error(format!(
                "needs {n} more bytes, {} left",
                self.buf.len() - self.pos
            )));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error("string without its terminating zero byte".into()));
        };
        let text = std::str::from_utf8(&rest[..len])
            .map_err(|e| self.error(format!("string is not UTF-8: {e}")))?;
        self.pos += len + 1;
        Ok(text)
    }

    fn expect(&mut self, want: u8) -> Result<(), DecodeError> {
        let at = self.pos;
        let got = self.u8()?;
        if got != want {
            return Err(DecodeError {
                tag: self.tag,
                at,
                reason: format!("expected {:?}, found {got:#04x}", want as char),
            });
        }
        Ok(())
    }

    fn tuple_then(&mut self, next: u8) -> Result<Tuple<'a>, DecodeError> {
        let tuple = self.tuple()?;
        self.expect(next)?;
        Ok(tuple)
    }

    fn tuple(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let count = self.u16()? as usize;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let value = match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.u32()? as usize;
                    TupleValue::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    TupleValue::Binary(self.bytes(len)?)
                }
                other => {
                    self.pos -= 1;
                    return Err(self.error(format!(
                        "unknown column kind {other:#04x} (expected n, u, t or b)"
                    )));
                }
            };
            values.push(value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    //! Payloads captured from PostgreSQL 15 with
    //! `pg_logical_slot_peek_binary_changes(slot, NULL, NULL, 'proto_version',
    //! '1', 'publication_names', 'cap', 'messages', 'true')` after:
    //!
    //! ```sql
    //! CREATE TYPE mood AS ENUM ('sad','happy');
    //! CREATE TABLE t(id int primary key, name text, doc text, m mood);  -- oid 16393
    //! CREATE TABLE u(id int primary key);                                -- oid 16400
    //! ALTER TABLE u REPLICA IDENTITY FULL;
    //! INSERT INTO t VALUES (1, 'héllo', NULL, 'happy');
    //! INSERT INTO t VALUES (2, 'b', repeat(md5('x'), 10000), NULL);
    //! UPDATE t SET id = 3, name = 'x' WHERE id = 2;     -- doc unchanged, TOASTed
    //! INSERT INTO u VALUES (7); DELETE FROM u WHERE id = 7;
    //! TRUNCATE u, t RESTART IDENTITY CASCADE;
    //! SELECT pg_logical_emit_message(false, 'velo', 'hi');
    //! -- and one insert under replication origin 'origi' at 0/ABCDEF
    //! ```

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn begin_and_commit() {
        let begin = hex("420000000001527ea0000303fbbe41fa12000002e4");
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: 0x0152_7EA0,
                commit_time: 0x0003_03FB_BE41_FA12,
                xid: 740,
            }
        );
        let commit = hex("43000000000001527ea00000000001527ed0000303fbbe41fa12");
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit {
                commit_lsn: 0x0152_7EA0,
                end_lsn: 0x0152_7ED0,
                commit_time: 0x0003_03FB_BE41_FA12,
            }
        );
    }

    #[test]
    fn relation_and_type() {
        let bytes = hex(concat!(
            "52000040097075626c69630074006400040169640000000017ffffffff006e616d65",
            "0000000019ffffffff00646f630000000019ffffffff006d0000004005ffffffff"
        ));
        let Message::Relation(rel) = decode(&bytes).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(rel.oid, 16393);
        assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("public", "t"));
        assert_eq!(rel.replica_identity, b'd');
        let names: Vec<_> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "doc", "m"]);
        assert!(rel.columns[0].key && !rel.columns[1].key);
        assert_eq!(rel.columns[0].type_oid, 23);
        assert_eq!(rel.columns[3].type_oid, 16389);
        assert_eq!(rel.columns[1].type_modifier, -1);

        let full = hex("52000040107075626c69630075006600010169640000000017ffffffff");
        let Message::Relation(rel) = decode(&full).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(rel.replica_identity, b'f');

        let bytes = hex("59000040057075626c6963006d6f6f6400");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Type {
                oid: 16389,
                namespace: "public",
                name: "mood",
            }
        );
    }

    #[test]
    fn insert_with_null() {
        let bytes = hex("49000040094e0004740000000131740000000668c3a96c6c6f6e74000000056861707079");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Insert {
                relation: 16393,
                new: vec![
                    TupleValue::Text(b"1"),
                    TupleValue::Text("héllo".as_bytes()),
                    TupleValue::Null,
                    TupleValue::Text(b"happy"),
                ],
            }
        );
    }

    #[test]
    fn update_with_changed_key_and_unchanged_toast() {
        let bytes = hex("55000040094b00047400000001326e6e6e4e0004740000000133740000000178756e");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Update {
                relation: 16393,
                old: Some((
                    OldKind::Key,
                    vec![
                        TupleValue::Text(b"2"),
                        TupleValue::Null,
                        TupleValue::Null,
                        TupleValue::Null
                    ]
                )),
                new: vec![
                    TupleValue::Text(b"3"),
                    TupleValue::Text(b"x"),
                    TupleValue::UnchangedToast,
                    TupleValue::Null,
                ],
            }
        );
    }

    #[test]
    fn delete_with_full_identity() {
        let bytes = hex("44000040104f0001740000000137");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Delete {
                relation: 16400,
                kind: OldKind::Full,
                old: vec![TupleValue::Text(b"7")],
            }
        );
    }

    #[test]
    fn truncate_origin_and_message() {
        let bytes = hex("5400000002030000401000004009");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Truncate {
                cascade: true,
                restart_identity: true,
                relations: vec![16400, 16393],
            }
        );
        let bytes = hex("4f0000000000abcdef6f7269676900");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::Origin {
                commit_lsn: 0xAB_CDEF,
                name: "origi",
            }
        );
        let bytes = hex("4d00000000000152a59076656c6f00000000026869");
        assert_eq!(
            decode(&bytes).unwrap(),
            Message::LogicalMessage {
                transactional: false,
                lsn: 0x0152_A590,
                prefix: "velo",
                content: b"hi",
            }
        );
    }

    #[test]
    fn errors_name_message_and_byte() {
        // The captured insert, cut inside its second value.
        let full = hex("49000040094e0004740000000131740000000668c3a96c6c6f6e74000000056861707079");
        let err = decode(&full[..20]).unwrap_err();
        assert_eq!(err.tag, b'I');
        assert_eq!(err.at, 19);
        assert!(
            err.to_string().contains("needs 6 more bytes, 1 left"),
            "{err}"
        );

        let mut bad_kind = full.clone();
        bad_kind[5] = b'x';
        let err = decode(&bad_kind).unwrap_err();
        assert!(err.to_string().contains("expected 'N'"), "{err}");

        let mut bad_column = full;
        bad_column[8] = b'z';
        let err = decode(&bad_column).unwrap_err();
        assert!(
            err.to_string().contains("unknown column kind 0x7a"),
            "{err}"
        );
        assert_eq!(err.at, 8);

        let err = decode(b"Z").unwrap_err();
        assert!(err.to_string().contains("unknown message type"), "{err}");
        let mut long = hex("420000000001527ea0000303fbbe41fa12000002e4");
        long.push(0);
        let err = decode(&long).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
        assert!(decode(b"").is_err());
    }
}
