//! The fast path of CSV framing. A line without a quote character (nearly
//! every line of most files) is split at its delimiters 32 bytes
//! at a time, and its cells are slices of the input: no state machine per byte,
//! no copy of the cells. A line with a quote, or with a carriage return that
//! is not part of its line break, goes to csv-core, which knows every rule;
//! this module only has to know when to step aside.

use wide::u8x16;

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

/// Bytes compared at once: two SSE2 registers on x86-64 (through `wide`,
/// whose portable fallback keeps other targets correct). Against one,
/// cachegrind counted about 20 fewer instructions per line of the
/// benchmark's trades (65 bytes): half the loop's turns and tests.
const BLOCK: usize = 32;

/// Bit `i` set where byte `i` of the 16 `bytes` is `byte`.
#[inline(always)]
fn bytes_equal(bytes: u8x16, byte: u8) -> u32 {
    bytes.simd_eq(u8x16::splat(byte)).to_bitmask()
}

/// Bit `i` set where byte `i` of `block` is one of `bytes`.
#[inline(always)]
fn any_equal<const N: usize>(block: &[u8; BLOCK], bytes: [u8; N]) -> u32 {
    let (lo, hi) = block.split_at(BLOCK / 2);
    let half = |h: &[u8]| u8x16::from(<[u8; BLOCK / 2]>::try_from(h).expect("half a block"));
    let (lo, hi) = (half(lo), half(hi));
    bytes
        .iter()
        .map(|&b| bytes_equal(lo, b) | (bytes_equal(hi, b) << (BLOCK / 2)))
        .fold(0, |m, b| m | b)
}

/// Pushes `base` plus the index of each bit set in `mask`.
#[inline(always)]
fn push_matches(mut mask: u32, base: usize, out: &mut Vec<usize>) {
    while mask != 0 {
        out.push(base + mask.trailing_zeros() as usize);
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
    #[inline(always)]
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
        let mut base = 0;
        while base < input.len() {
            // Set only for the last, short block.
            let last: [u8; BLOCK];
            let (block, live) = match input.get(base..base + BLOCK) {
                Some(bytes) => (<&[u8; BLOCK]>::try_from(bytes).expect("a block"), u32::MAX),
                // Zeros after the input, masked off.
                None => {
                    let n = input.len() - base;
                    let mut padded = [0u8; BLOCK];
                    padded[..n].copy_from_slice(&input[base..]);
                    last = padded;
                    (&last, (1u32 << n) - 1)
                }
            };
            let special = any_equal(block, [b'\n', b'\r', self.quote]) & live;
            let delims = any_equal(block, [self.delimiter]) & live;
            if special != 0 {
                let at = special.trailing_zeros();
                // Only the delimiters before the special byte.
                push_matches(delims & ((1u32 << at) - 1), base, delimiters);
                return Some(base + at as usize);
            }
            push_matches(delims, base, delimiters);
            base += BLOCK;
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
    fn lines_of_every_length_around_blocks() {
        // Each length from 0 to 70, with and without a line break, so that
        // the line break, the last delimiter and the input's end fall on
        // every offset of a block, including the short last one.
        for n in 0..70 {
            let line: String = (0..n).map(|i| if i % 3 == 2 { ',' } else { 'x' }).collect();
            let want: Vec<usize> = (0..n).filter(|i| i % 3 == 2).collect();
            let (s, d) = split(&format!("{line}\n,,"), false);
            assert_eq!(
                s,
                Split::Line {
                    len: n + 1,
                    content: n
                },
                "length {n}"
            );
            assert_eq!(d, want, "length {n}");
            let (s, d) = split(&line, true);
            assert_eq!(
                s,
                Split::Line { len: n, content: n },
                "length {n} at the end"
            );
            assert_eq!(d, want, "length {n} at the end");
        }
    }

    #[test]
    fn a_nul_delimiter_does_not_match_the_padding() {
        let mut d = Vec::new();
        let s = Splitter::new(0, b'"').split(b"a\0b", true, &mut d);
        assert_eq!(s, Split::Line { len: 3, content: 3 });
        assert_eq!(d, vec![1]);
    }
}
