//! Telling files apart: device and inode plus a checksum of the first bytes.
//!
//! The inode follows a file through a rename; the checksum catches an inode
//! reused by a new file, and a file whose content was replaced in place. A
//! file shorter than the checksum window is fingerprinted over what it has,
//! and the covered length is part of the fingerprint, so the same file still
//! matches after it grows.

use std::fmt;
use std::fs::{File, Metadata};
#[cfg(not(unix))]
use std::io::{Read, Seek, SeekFrom};
use std::str::FromStr;

/// Default bytes checksummed.
pub(crate) const DEFAULT_BYTES: u64 = 256;

/// The identity of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Device id.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Bytes covered by `crc` (less than the window for short files).
    pub covered: u64,
    /// CRC-32 of the first `covered` bytes.
    pub crc: u32,
}

impl Fingerprint {
    /// Fingerprints an open file over up to `window` bytes, keeping its position.
    pub fn of(file: &File, window: u64) -> std::io::Result<Self> {
        Self::of_opened(file, &file.metadata()?, window)
    }

    /// [`of`](Self::of) with the file's metadata at hand: one `fstat` fewer
    /// for a caller that has just opened and checked the file.
    pub fn of_opened(file: &File, metadata: &Metadata, window: u64) -> std::io::Result<Self> {
        let (dev, ino) = Self::identity_of(metadata);
        let (covered, crc) = checksum(file, window)?;
        Ok(Fingerprint {
            dev,
            ino,
            covered,
            crc,
        })
    }

    /// Whether `file` is the file this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> std::io::Result<bool> {
        self.matches_opened(file, &file.metadata()?)
    }

    /// [`matches`](Self::matches) with the file's metadata at hand.
    pub fn matches_opened(&self, file: &File, metadata: &Metadata) -> std::io::Result<bool> {
        if Self::identity_of(metadata) != (self.dev, self.ino) {
            return Ok(false);
        }
        self.content_matches(file)
    }

    /// The device and inode of `file` (one `fstat`): what
    /// [`same_inode`](Self::same_inode) compares, for a caller that checks
    /// one file against many fingerprints.
    pub fn identity(file: &File) -> std::io::Result<(u64, u64)> {
        Ok(Self::identity_of(&file.metadata()?))
    }

    /// The device and inode in `metadata` (`(0, 0)` where the platform has
    /// none).
    pub fn identity_of(metadata: &Metadata) -> (u64, u64) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            (metadata.dev(), metadata.ino())
        }
        #[cfg(not(unix))]
        {
            let _ = metadata;
            (0, 0)
        }
    }

    /// Whether `file` has this fingerprint's device and inode (content aside).
    pub fn same_inode(&self, file: &File) -> std::io::Result<bool> {
        Ok(Self::identity(file)? == (self.dev, self.ino))
    }

    /// Whether `file`'s first bytes are those this fingerprint covers,
    /// whatever its inode (a copy made by copytruncate rotation).
    pub fn content_matches(&self, file: &File) -> std::io::Result<bool> {
        let (covered, crc) = checksum(file, self.covered)?;
        Ok(covered == self.covered && crc == self.crc)
    }
}

/// Through `&File`, so that a file shared with a read ahead (positioned
/// reads, which never use the offset) can be checked too. Positioned reads
/// here as well: no seeks, and the file's offset is left alone.
#[cfg(unix)]
fn checksum(file: &File, window: u64) -> std::io::Result<(u64, u32)> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; window as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled as u64, crc32fast::hash(&buf[..filled])))
}

/// [`checksum`] where positioned reads are not at hand: seek, read, seek back.
#[cfg(not(unix))]
fn checksum(mut file: &File, window: u64) -> std::io::Result<(u64, u32)> {
    let pos = file.stream_position()?;
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::with_capacity(window as usize);
    file.take(window).read_to_end(&mut buf)?;
    file.seek(SeekFrom::Start(pos))?;
    Ok((buf.len() as u64, crc32fast::hash(&buf)))
}

impl fmt::Display for Fingerprint {
    /// `dev:ino:covered:crc` (crc in hex), as stored in `SourceOffset::File`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{:08x}",
            self.dev, self.ino, self.covered, self.crc
        )
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("`{s}` is not a file fingerprint (dev:ino:covered:crc)");
        let [dev, ino, covered, crc] = parts.as_slice() else {
            return Err(bad());
        };
        Ok(Fingerprint {
            dev: dev.parse().map_err(|_| bad())?,
            ino: ino.parse().map_err(|_| bad())?,
            covered: covered.parse().map_err(|_| bad())?,
            crc: u32::from_str_radix(crc, 16).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn rename_keeps_identity_replace_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("app.log");
        std::fs::write(&a, b"hello\n").unwrap();
        let fp = Fingerprint::of(&File::open(&a).unwrap(), DEFAULT_BYTES).unwrap();
        assert_eq!(fp.covered, 6);
        let b = dir.path().join("app.log.1");
        std::fs::rename(&a, &b).unwrap();
        // Growing past the short window keeps the match.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&b)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        assert!(fp.matches(&File::open(&b).unwrap()).unwrap());
        std::fs::write(&a, b"hello\n").unwrap();
        assert!(
            !fp.matches(&File::open(&a).unwrap()).unwrap(),
            "another inode"
        );
        assert!(fp.content_matches(&File::open(&a).unwrap()).unwrap());
        // Same inode, new content (truncated and rewritten).
        std::fs::write(&b, b"HELLO\n").unwrap();
        assert!(!fp.matches(&File::open(&b).unwrap()).unwrap());
    }

    #[test]
    fn the_checksum_covers_the_window_and_leaves_the_offset_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.log");
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        let mut f = File::open(&path).unwrap();
        f.seek(SeekFrom::Start(10)).unwrap();
        let fp = Fingerprint::of(&f, DEFAULT_BYTES).unwrap();
        assert_eq!(fp.covered, DEFAULT_BYTES);
        assert_eq!(fp.crc, crc32fast::hash(&body[..DEFAULT_BYTES as usize]));
        assert_eq!(f.stream_position().unwrap(), 10);
    }

    #[test]
    fn text_form_round_trips() {
        let fp = Fingerprint {
            dev: 2049,
            ino: 77,
            covered: 256,
            crc: 0xdead_beef,
        };
        assert_eq!(fp.to_string(), "2049:77:256:deadbeef");
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        assert!("x".parse::<Fingerprint>().is_err());
    }
}
