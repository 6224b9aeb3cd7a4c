//! `Native` blocks: ClickHouse's columnar format, each column's values end
//! to end. The server copies such columns instead of parsing rows: an
//! insert of the benchmark's million rows took the local 18.16 server half
//! the time of the same rows as `RowBinary`.
//!
//! A block is the number of columns and rows, then per column its name, its
//! type and its values. Fixed-size values and strings are laid out as in
//! `RowBinary` (so `row_binary::write_value` encodes them); `Nullable(T)` is
//! a null map (a byte per row) followed by `T`'s values, defaults in the
//! null rows; `Array(T)` is the running element count per row (`UInt64`)
//! followed by all elements. `LowCardinality` columns have a dictionary
//! encoding of their own and are not written here (the sink sends them as
//! `RowBinary`; see `Mapping::new` in `sink.rs`).

use velo_datasource_core::{Error, FieldValue, Result, StreamRecord};

use crate::encode::{MappedColumn, cannot_take};
use crate::row_binary::{Binary, push_len, write_value};

/// One column of a block being built.
#[derive(Debug)]
enum Column {
    /// Values of a type without nesting, end to end.
    Plain { ty: Binary, data: Vec<u8> },
    /// A byte per row (1 = null), then the inner column.
    Nullable { nulls: Vec<u8>, inner: Box<Column> },
    /// Elements so far after each row, then the elements' column.
    Array {
        offsets: Vec<u8>,
        elements: u64,
        inner: Box<Column>,
    },
}

/// Where a column was before a row, to take a half-written row back.
#[derive(Debug, Clone, Copy)]
struct Mark {
    data: usize,
    nulls: usize,
    offsets: usize,
    elements: u64,
}

impl Column {
    fn new(ty: &Binary) -> Column {
        match ty {
            Binary::Nullable(inner) => Column::Nullable {
                nulls: Vec::new(),
                inner: Box::new(Column::new(inner)),
            },
            Binary::Array(inner) => Column::Array {
                offsets: Vec::new(),
                elements: 0,
                inner: Box::new(Column::new(inner)),
            },
            ty => Column::Plain {
                ty: ty.clone(),
                data: Vec::new(),
            },
        }
    }

    /// Appends one row's value, or says why the column cannot take it.
    fn push(&mut self, value: &FieldValue, type_name: &str) -> std::result::Result<(), String> {
        match self {
            Column::Plain { ty, data } => write_value(data, value, ty, type_name),
            Column::Nullable { nulls, inner } => {
                if value.is_null() {
                    nulls.push(1);
                    inner.push_default();
                    Ok(())
                } else {
                    nulls.push(0);
                    inner.push(value, type_name)
                }
            }
            Column::Array {
                offsets,
                elements,
                inner,
            } => {
                let items: &[FieldValue] = match value {
                    // Arrays cannot be Nullable in ClickHouse: a null list is an empty one.
                    FieldValue::Null => &[],
                    FieldValue::Array(items) => items,
                    other => {
                        return Err(cannot_take(other, type_name));
                    }
                };
                for item in items {
                    inner.push(item, type_name)?;
                }
                *elements += items.len() as u64;
                offsets.extend_from_slice(&elements.to_le_bytes());
                Ok(())
            }
        }
    }

    /// Appends the value a null row holds underneath its null mark.
    fn push_default(&mut self) {
        match self {
            Column::Plain { ty, data } => push_default(data, ty),
            Column::Nullable { nulls, inner } => {
                nulls.push(1);
                inner.push_default();
            }
            Column::Array {
                offsets, elements, ..
            } => offsets.extend_from_slice(&elements.to_le_bytes()),
        }
    }

    fn mark(&self, marks: &mut Vec<Mark>) {
        let (data, nulls, offsets, elements, inner) = match self {
            Column::Plain { data, .. } => (data.len(), 0, 0, 0, None),
            Column::Nullable { nulls, inner } => (0, nulls.len(), 0, 0, Some(inner)),
            Column::Array {
                offsets,
                elements,
                inner,
            } => (0, 0, offsets.len(), *elements, Some(inner)),
        };
        marks.push(Mark {
            data,
            nulls,
            offsets,
            elements,
        });
        if let Some(inner) = inner {
            inner.mark(marks);
        }
    }

    /// Back to `marks` (as [`mark`](Self::mark) left them, this column's first).
    fn reset(&mut self, marks: &mut impl Iterator<Item = Mark>) {
        let Some(m) = marks.next() else { return };
        match self {
            Column::Plain { data, .. } => data.truncate(m.data),
            Column::Nullable { nulls, inner } => {
                nulls.truncate(m.nulls);
                inner.reset(marks);
            }
            Column::Array {
                offsets,
                elements,
                inner,
            } => {
                offsets.truncate(m.offsets);
                *elements = m.elements;
                inner.reset(marks);
            }
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Column::Plain { data, .. } => out.extend_from_slice(data),
            Column::Nullable { nulls, inner } => {
                out.extend_from_slice(nulls);
                inner.write(out);
            }
            Column::Array { offsets, inner, .. } => {
                out.extend_from_slice(offsets);
                inner.write(out);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Column::Plain { data, .. } => data.len(),
            Column::Nullable { nulls, inner } => nulls.len() + inner.bytes(),
            Column::Array { offsets, inner, .. } => offsets.len() + inner.bytes(),
        }
    }

    fn clear(&mut self) {
        match self {
            Column::Plain { data, .. } => data.clear(),
            Column::Nullable { nulls, inner } => {
                nulls.clear();
                inner.clear();
            }
            Column::Array {
                offsets,
                elements,
                inner,
            } => {
                offsets.clear();
                *elements = 0;
                inner.clear();
            }
        }
    }
}

/// The default a null row of `ty` stores: zeros, or an empty string.
fn push_default(data: &mut Vec<u8>, ty: &Binary) {
    let zeros = match ty {
        Binary::Int { bytes, .. } => usize::from(*bytes),
        Binary::Float32 | Binary::Date32 | Binary::DateTime => 4,
        Binary::Float64 | Binary::DateTime64(_) => 8,
        Binary::Bool => 1,
        Binary::Date => 2,
        Binary::FixedString(n) => *n,
        Binary::String => {
            push_len(data, 0);
            0
        }
        Binary::Nullable(_) | Binary::Array(_) => {
            unreachable!("nested types are columns of their own")
        }
    };
    data.resize(data.len() + zeros, 0);
}

/// Rows of one insert, column by column.
#[derive(Debug)]
pub(crate) struct Block {
    /// Each column's name and type as the block header writes them.
    header: Vec<(String, String)>,
    columns: Vec<Column>,
    rows: usize,
    marks: Vec<Mark>,
}

impl Block {
    /// An empty block of `columns`, each of which has a [`Binary`] encoding.
    pub(crate) fn new(columns: &[MappedColumn]) -> Result<Block> {
        let mut header = Vec::with_capacity(columns.len());
        let mut built = Vec::with_capacity(columns.len());
        for c in columns {
            let ty = c.binary.as_ref().ok_or_else(|| {
                Error::State(format!("column `{}` has no Native encoding", c.name))
            })?;
            header.push((c.name.clone(), c.column.type_name.clone()));
            built.push(Column::new(ty));
        }
        Ok(Block {
            header,
            columns: built,
            rows: 0,
            marks: Vec::new(),
        })
    }

    /// The bytes the block's values take so far.
    pub(crate) fn bytes(&self) -> usize {
        self.columns.iter().map(Column::bytes).sum()
    }

    /// Appends `record`; a value that does not fit leaves the block as it was.
    pub(crate) fn push(
        &mut self,
        record: &StreamRecord,
        columns: &[MappedColumn],
        target: &str,
    ) -> Result<()> {
        self.marks.clear();
        for column in &self.columns {
            column.mark(&mut self.marks);
        }
        for (column, c) in self.columns.iter_mut().zip(columns) {
            if let Err(why) = column.push(c.value_of(record), &c.column.type_name) {
                let mut marks = self.marks.iter().copied();
                for column in &mut self.columns {
                    column.reset(&mut marks);
                }
                return Err(c.mismatch(record, target, &why));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends the block to `out` and empties it for the next rows.
    pub(crate) fn write_to(&mut self, out: &mut Vec<u8>) {
        if self.rows == 0 {
            return;
        }
        push_len(out, self.columns.len());
        push_len(out, self.rows);
        for ((name, type_name), column) in self.header.iter().zip(&mut self.columns) {
            push_len(out, name.len());
            out.extend_from_slice(name.as_bytes());
            push_len(out, type_name.len());
            out.extend_from_slice(type_name.as_bytes());
            column.write(out);
            column.clear();
        }
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use velo_datasource_core::{DataType, FieldDefinition, Schema};

    use super::*;
    use crate::encode::Column as ColumnType;

    fn block_of(types: &[(&str, &str)]) -> (Block, Vec<MappedColumn>) {
        let mapped: Vec<MappedColumn> = types
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| MappedColumn::new(i, (*name).to_owned(), ColumnType::parse(ty)))
            .collect();
        (Block::new(&mapped).unwrap(), mapped)
    }

    fn record(values: Vec<FieldValue>) -> StreamRecord {
        let fields = (0..values.len())
            .map(|i| FieldDefinition::optional(format!("f{i}"), DataType::Any))
            .collect();
        StreamRecord::new(Arc::new(Schema::new(fields)), values).unwrap()
    }

    #[test]
    fn columns_end_to_end_with_null_maps_and_offsets() {
        let (mut block, mapped) = block_of(&[
            ("id", "UInt16"),
            ("name", "Nullable(String)"),
            ("tags", "Array(Nullable(Int8))"),
        ]);
        let rows = [
            vec![
                FieldValue::Integer(1),
                "a".into(),
                FieldValue::Array(vec![FieldValue::Integer(5), FieldValue::Null]),
            ],
            vec![FieldValue::Integer(2), FieldValue::Null, FieldValue::Null],
        ];
        for r in rows {
            block.push(&record(r), &mapped, "db.t").unwrap();
        }
        let mut out = Vec::new();
        block.write_to(&mut out);
        // Three columns, two rows; each column's name and type carry their lengths.
        let mut want = vec![3u8, 2];
        for (name, ty, data) in [
            ("id", "UInt16", vec![1u8, 0, 2, 0]),
            // null map, then the strings ("" under the null)
            ("name", "Nullable(String)", vec![0, 1, 1, b'a', 0]),
            // running element counts 2 and 2, then the elements' null map and values
            (
                "tags",
                "Array(Nullable(Int8))",
                [2u64.to_le_bytes(), 2u64.to_le_bytes()]
                    .concat()
                    .into_iter()
                    .chain([0, 1, 5, 0])
                    .collect(),
            ),
        ] {
            want.push(name.len() as u8);
            want.extend(name.as_bytes());
            want.push(ty.len() as u8);
            want.extend(ty.as_bytes());
            want.extend(data);
        }
        assert_eq!(out, want);
        let mut again = Vec::new();
        block.write_to(&mut again);
        assert!(again.is_empty(), "emptied for the next rows");
    }

    #[test]
    fn a_bad_value_leaves_the_block_as_it_was() {
        let (mut block, mapped) = block_of(&[("a", "Array(UInt8)"), ("b", "Int64")]);
        let push = |block: &mut Block, values| block.push(&record(values), &mapped, "db.t");
        let good_row = || vec![FieldValue::Array(vec![1.into()]), 7.into()];
        push(&mut block, good_row()).unwrap();
        let mut good = Vec::new();
        block.write_to(&mut good);
        push(&mut block, good_row()).unwrap();
        // The array goes in, then the second field fails: both columns are taken back.
        let err = push(
            &mut block,
            vec![FieldValue::Array(vec![2.into(), 3.into()]), "x".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("field `b`") && err.contains("Int64"), "{err}");
        let err = push(&mut block, vec![FieldValue::Null, FieldValue::Null])
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not allow"), "{err}");
        let mut after = Vec::new();
        block.write_to(&mut after);
        assert_eq!(after, good);
    }
}
