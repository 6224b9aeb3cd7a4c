//! The fast path of CSV framing. A line without a quote character (nearly
//! every line of most files) is split at its delimiters eight bytes at a
//! time, and its cells are slices of the input: no state machine per byte,
//! no copy of the cells. A line with a quote, or with a carriage return that
//! is not part of its line break, goes to csv-core, which knows every rule;
//! this module only has to know when to step aside.

/// What [`Splitter::split`] found at the start of its input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Split {
    /// One record on one line: `len` bytes with its line break (`\n` or
    /// `\r\n`, or none at the end of the input), of which the first
    /// `content` are cells.
    Line { len: usize, content: usize },
    /// The line holds a quote or a lone `\r`: csv-core reads it.
    NeedsCsvCore,
    /// No line break yet, and more input may come.
    Incomplete,
}

/// Splits unquoted lines at a delimiter.
#[derive(Debug, Clone, Copy)]
pub(super) struct Splitter {
    delimiter: u8,
    quote: u8,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of each byte of `word` equal to `byte`, and no other bit
/// (no borrow crosses bytes, so there are no false matches).
#[inline(always)]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Pushes `base` plus the byte index of each match in `mask`.
#[inline(always)]
fn push_matches(mut mask: u64, base: usize, out: &mut Vec<usize>) {
    while mask != 0 {
        out.push(base + mask.trailing_zeros() as usize / 8);
        mask &= mask - 1;
    }
}

impl Splitter {
    pub(super) fn new(delimiter: u8, quote: u8) -> Self {
        Splitter { delimiter, quote }
    }

    /// Looks at the line at the start of `input` (not empty). For a
    /// [`Split::Line`], the position of each delimiter in it is appended to
    /// `delimiters`, in order; otherwise what was appended is meaningless.
    pub(super) fn split(&self, input: &[u8], eof: bool, delimiters: &mut Vec<usize>) -> Split {
        let stop = self.first_special(input, delimiters);
        match stop.map(|at| (at, input[at])) {
            None if eof => Split::Line {
                len: input.len(),
                content: input.len(),
            },
            None => Split::Incomplete,
            Some((at, b'\n')) => Split::Line {
                len: at + 1,
                content: at,
            },
            Some((at, b'\r')) => match input.get(at + 1) {
                Some(b'\n') => Split::Line {
                    len: at + 2,
                    content: at,
                },
                // A final `\r` ends the last record, as in csv-core.
                None if eof => Split::Line {
                    len: at + 1,
                    content: at,
                },
                None => Split::Incomplete,
                Some(_) => Split::NeedsCsvCore,
            },
            Some(_) => Split::NeedsCsvCore,
        }
    }

    /// The index of the first `\n`, `\r` or quote, recording the delimiters before it.
    #[inline]
    fn first_special(&self, input: &[u8], delimiters: &mut Vec<usize>) -> Option<usize> {
        let mut words = input.chunks_exact(8);
        let mut base = 0;
        for word in words.by_ref() {
            let w = u64::from_le_bytes(word.try_into().expect("chunks of 8"));
            let special =
                bytes_equal(w, b'\n') | bytes_equal(w, b'\r') | bytes_equal(w, self.quote);
            let delims = bytes_equal(w, self.delimiter);
            if special != 0 {
                let at = special.trailing_zeros() as usize / 8;
                // Only the delimiters before the special byte.
                push_matches(delims & ((1u64 << (at * 8)) - 1), base, delimiters);
                return Some(base + at);
            }
            push_matches(delims, base, delimiters);
            base += 8;
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            if b == b'\n' || b == b'\r' || b == self.quote {
                return Some(base + i);
            }
            if b == self.delimiter {
                delimiters.push(base + i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &str, eof: bool) -> (Split, Vec<usize>) {
        let mut d = Vec::new();
        let s = Splitter::new(b',', b'"').split(input.as_bytes(), eof, &mut d);
        (s, d)
    }

    #[test]
    fn lines_and_delimiters_across_words() {
        let (s, d) = split(
            "1,AAPL,105.23,100,buy,XNAS,2024-01-15T10:30:00Z\nnext",
            false,
        );
        assert_eq!(
            s,
            Split::Line {
                len: 48,
                content: 47
            }
        );
        assert_eq!(d, vec![1, 6, 13, 17, 21, 26]);
        assert_eq!(
            split("a,b\r\nc", false).0,
            Split::Line { len: 5, content: 3 }
        );
        // A delimiter after the line break in the same word is not this line's.
        assert_eq!(split("a\n,b,c,d,e", false).1, Vec::<usize>::new());
    }

    #[test]
    fn end_of_input() {
        assert_eq!(split("a,b", false).0, Split::Incomplete);
        assert_eq!(split("a,b", true).0, Split::Line { len: 3, content: 3 });
        assert_eq!(split("a,b\r", false).0, Split::Incomplete);
        assert_eq!(split("a,b\r", true).0, Split::Line { len: 4, content: 3 });
    }

    #[test]
    fn quotes_and_lone_carriage_returns_go_to_csv_core() {
        assert_eq!(split("1,\"x\"\n", false).0, Split::NeedsCsvCore);
        assert_eq!(split("12345678,ab\"c\n", false).0, Split::NeedsCsvCore);
        assert_eq!(split("a\rb\n", false).0, Split::NeedsCsvCore);
    }

    #[test]
    fn byte_matches_are_exact() {
        // Bytes one above or below the needle, and 0x80 neighbours, never match.
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([
                b,
                b ^ 0x80,
                b.wrapping_add(1),
                b.wrapping_sub(1),
                0,
                0xff,
                0x7f,
                0x80,
            ]);
            let m = bytes_equal(w, b);
            assert_eq!(m & 0x80, 0x80, "byte {b}");
            for i in 1..8 {
                let byte = (w >> (i * 8)) as u8;
                assert_eq!((m >> (i * 8)) & 0xff != 0, byte == b, "byte {b} at {i}");
            }
        }
    }
}
