//! Numbers read from eight text bytes at once (SWAR: one `u64` holds the
//! eight bytes, the first of them in its lowest byte). Cells of CSV files
//! are short numbers; testing and combining their digits a word at a time
//! takes a handful of instructions where a loop takes several per digit.
//!
//! Every function answers `None` for what it does not cover, and its caller
//! then takes the general path, so these only decide speed, never values.

/// `b'0'` in every byte.
const ZEROS: u64 = 0x3030_3030_3030_3030;

/// The eight bytes of `text` that end at `end`; `None` when fewer do.
#[inline(always)]
fn word_ending(text: &[u8], end: usize) -> Option<u64> {
    let bytes = text.get(end.checked_sub(8)?..end)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Bytes `8 - len..8` of a word: a cell of `len` bytes that ends the word.
#[inline(always)]
fn top_bytes(len: usize) -> u64 {
    match len {
        0 => 0,
        n => u64::MAX << (8 * (8 - n.min(8))),
    }
}

/// Whether each byte of `word` is an ASCII digit: its high nibble is 3,
/// and still 3 after adding 6.
#[inline(always)]
fn all_digits(word: u64) -> bool {
    let nibbles = (word & 0xF0F0_F0F0_F0F0_F0F0)
        | ((word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
    nibbles == 0x3333_3333_3333_3333
}

/// The number eight ASCII digits write, the first digit in the lowest
/// byte: pairs, then fours, then all eight, in three multiplications.
#[inline(always)]
fn combine(digits: u64) -> u64 {
    let v = digits - ZEROS;
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    (v & mask)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & mask).wrapping_mul(1 + (10_000 << 32)))
        >> 32
}

/// `text[start..end]` as a number when it is one to eight ASCII digits,
/// read from the eight bytes ending at `end` (so `None` when fewer than
/// eight bytes end there). Against `str::parse` on the two integer columns
/// of the benchmark's trades, cachegrind counted 73 fewer instructions per
/// record (about 140 down to 65).
#[inline(always)]
pub(crate) fn eight_digits(text: &[u8], start: usize, end: usize) -> Option<i64> {
    let len = end.checked_sub(start).filter(|n| (1..=8).contains(n))?;
    let word = word_ending(text, end)?;
    // The bytes before the cell become `0`s.
    let cell = top_bytes(len);
    let digits = (word & cell) | (ZEROS & !cell);
    all_digits(digits).then(|| combine(digits) as i64)
}

/// [`eight_digits`] after an optional `-`.
#[inline(always)]
pub(crate) fn short_integer(text: &[u8], start: usize, end: usize) -> Option<i64> {
    match text.get(start)? {
        b'-' => eight_digits(text, start + 1, end).map(|v| -v),
        _ => eight_digits(text, start, end),
    }
}

/// `text[start..end]` as an `f64` when it is an optional sign and then at
/// most eight bytes of digits with at most one decimal point ("100.23",
/// "-0.5", "42"); read from the eight
/// bytes ending at `end` like [`eight_digits`]. The digits as an integer and
/// the power of ten of the fraction are exact in an `f64`, so one division
/// gives the correctly rounded value, the one `str::parse` gives.
#[inline(always)]
pub(crate) fn short_decimal(text: &[u8], start: usize, end: usize) -> Option<f64> {
    const POW10: [f64; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];
    let (negative, start) = match text.get(start)? {
        b'-' => (true, start + 1),
        b'+' => (false, start + 1),
        _ => (false, start),
    };
    let len = end.checked_sub(start).filter(|n| (1..=8).contains(n))?;
    let word = word_ending(text, end)?;
    let cell = top_bytes(len);
    let word = (word & cell) | (ZEROS & !cell);
    // The first `.` (the bytes before the cell are `0`s, so no borrow
    // reaches it from below): bit 7 of each byte that is one.
    let x = word ^ 0x2E2E_2E2E_2E2E_2E2E;
    let dots = x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080;
    let (digits, fraction) = if dots == 0 {
        (word, 0)
    } else {
        // Drop the point: the bytes before it move up one byte, and a `0`
        // comes in at the bottom (the cell's other bytes are `0`s already).
        let at = (dots.trailing_zeros() / 8) as usize;
        let below = (1u64 << (8 * at)) - 1;
        let above = top_bytes(7 - at);
        if len == 1 {
            return None;
        }
        (((word & below) << 8) | (word & above) | 0x30, 7 - at)
    };
    if !all_digits(digits) {
        return None;
    }
    let v = combine(digits) as f64 / POW10[fraction];
    Some(if negative { -v } else { v })
}

/// Seconds since midnight of the eight bytes `HH:MM:SS`; `None` if they
/// are not that shape or name no time of day (a leap second included:
/// chrono's parser decides those).
#[inline(always)]
pub(crate) fn hh_mm_ss(bytes: &[u8]) -> Option<u32> {
    const COLONS: u64 = 0x0000_FF00_00FF_0000;
    let word = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    if word & COLONS != 0x0000_3A00_003A_0000 {
        return None;
    }
    let digits = (word & !COLONS) | (ZEROS & COLONS);
    if !all_digits(digits) {
        return None;
    }
    // Each pair as tens * 10 + units, in bytes 0, 3 and 6.
    let v = digits - ZEROS;
    let pairs = v.wrapping_mul(10).wrapping_add(v >> 8);
    let (h, m, s) = (pairs & 0xFF, (pairs >> 24) & 0xFF, (pairs >> 48) & 0xFF);
    (h < 24 && m < 60 && s < 60).then(|| (h * 3600 + m * 60 + s) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `eight_digits` of `cell` placed after `before`.
    fn integer(before: &str, cell: &str) -> Option<i64> {
        let text = format!("{before}{cell}");
        eight_digits(text.as_bytes(), before.len(), text.len())
    }

    /// `short_decimal` of `cell` placed after `before`.
    fn decimal(before: &str, cell: &str) -> Option<f64> {
        let text = format!("{before}{cell}");
        short_decimal(text.as_bytes(), before.len(), text.len())
    }

    #[test]
    fn digits_read_from_the_word_that_ends_the_cell() {
        assert_eq!(integer("12345678,", "0"), Some(0));
        assert_eq!(integer("xxxxxxxx", "42"), Some(42));
        assert_eq!(integer("", "12345678"), Some(12_345_678));
        assert_eq!(integer("99999999", "00000007"), Some(7));
        assert_eq!(integer("1,", "99999999"), Some(99_999_999));
        // Not digits, too long, empty, or fewer than eight bytes to read.
        for (before, cell) in [
            ("xxxxxxxx", "4a"),
            ("xxxxxxxx", "-4"),
            ("xxxxxxxx", " 4"),
            ("xxxxxxxx", "4:"),
            ("xxxxxxxx", "4/"),
            ("x", "123456789"),
            ("xxxxxxxx", ""),
            ("", "42"),
        ] {
            assert_eq!(integer(before, cell), None, "{before:?} {cell:?}");
        }
    }

    #[test]
    fn negative_integers() {
        assert_eq!(short_integer(b"xxxxxxx-42", 7, 10), Some(-42));
        assert_eq!(short_integer(b"xxxxxxx+42", 7, 10), None);
        assert_eq!(short_integer(b"xxxxxxxx--4", 8, 11), None);
        assert_eq!(short_integer(b"xxxxxxxx-", 8, 9), None);
    }

    #[test]
    fn decimals_with_and_without_a_point() {
        let before = "9.9,1.5,";
        assert_eq!(decimal(before, "100.23"), Some(100.23));
        assert_eq!(decimal(before, "-0.5"), Some(-0.5));
        assert_eq!(decimal(before, "+7"), Some(7.0));
        assert_eq!(decimal(before, ".5"), Some(0.5));
        assert_eq!(decimal(before, "5."), Some(5.0));
        assert_eq!(decimal(before, "1234567."), Some(1_234_567.0));
        assert_eq!(decimal(before, ".1234567"), Some(0.123_456_7));
        assert_eq!(decimal(before, "-.1234567"), Some(-0.123_456_7));
        for cell in [
            ".",
            "-",
            "",
            "1.2.3",
            "1e5",
            "1,5",
            " 1.5",
            "1.5 ",
            "123456789",
            "1234.5678",
            "--1",
            "NaN",
        ] {
            assert_eq!(decimal(before, cell), None, "{cell:?}");
        }
        // Fewer than eight bytes end the cell.
        assert_eq!(decimal("", "1.5"), None);
    }

    #[test]
    fn times_of_day() {
        assert_eq!(hh_mm_ss(b"00:00:00"), Some(0));
        assert_eq!(hh_mm_ss(b"10:30:05.123Z"), Some(37_805));
        assert_eq!(hh_mm_ss(b"23:59:59"), Some(86_399));
        for t in [
            "24:00:00", "23:60:00", "23:59:60", "10-30:05", "10:30-05", "1a:30:05", "10:30:0",
            "10:3:005",
        ] {
            assert_eq!(hh_mm_ss(t.as_bytes()), None, "{t}");
        }
    }

    proptest! {
        #[test]
        fn integers_agree_with_str_parse(before in "[ -~]{8}", cell in "[ -~]{1,8}") {
            let parsed = cell.parse::<i64>().ok().filter(|_| cell.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(integer(&before, &cell), parsed);
        }

        #[test]
        fn every_number_of_up_to_eight_digits(n in 0u32..100_000_000, width in 1usize..=8) {
            let cell = format!("{n:0width$}");
            prop_assert_eq!(integer("abcdefgh", &cell), cell.parse::<i64>().ok().filter(|_| cell.len() <= 8));
        }

        #[test]
        fn decimals_agree_with_str_parse(before in "[ -~]{8}", cell in "[-+]?[0-9.]{1,8}") {
            if let Some(v) = decimal(&before, &cell) {
                prop_assert_eq!(Some(v), cell.parse::<f64>().ok(), "{:?}", cell);
            }
        }

        #[test]
        fn every_short_decimal_is_read(int in 0u32..10_000, frac in 0u32..1000, sign in "[-+]?") {
            let cell = format!("{sign}{int}.{frac:03}");
            prop_assert_eq!(decimal("abcdefgh", &cell), cell.parse::<f64>().ok());
        }

        #[test]
        fn every_time_of_day(secs in 0u32..86_400) {
            let t = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            prop_assert_eq!(hh_mm_ss(t.as_bytes()), Some(secs));
        }
    }
}
