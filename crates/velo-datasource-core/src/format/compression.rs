//! gzip and zstd around any reader or writer, chosen by name or extension.
//!
//! Each codec is behind a cargo feature (`gzip`, `zstd`); asking for one that
//! is not compiled in is an [`Error::Unsupported`] naming the feature.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain bytes.
    #[default]
    None,
    /// gzip (also reads concatenated members).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec implied by a file name: `.gz`/`.gzip` or `.zst`/`.zstd`.
    pub fn from_path(path: impl AsRef<Path>) -> Self {
        match path
            .as_ref()
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gz" | "gzip") => Compression::Gzip,
            Some("zst" | "zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// The usual extension, without the dot (`None` for plain).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gz"),
            Compression::Zstd => Some("zst"),
        }
    }

    /// Whether this build can read and write the codec (its cargo feature
    /// is on), without building one to find out.
    pub const fn is_compiled(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// Wraps `inner` so that reading yields decompressed bytes.
    pub fn reader<'a, R: Read + Send + 'a>(self, inner: R) -> Result<Box<dyn Read + Send + 'a>> {
        match self {
            Compression::None => Ok(Box::new(inner)),
            #[cfg(feature = "gzip")]
            Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(inner))),
            #[cfg(feature = "zstd")]
            Compression::Zstd => Ok(Box::new(
                zstd::stream::read::Decoder::new(inner).map_err(|e| Error::io("zstd stream", e))?,
            )),
            #[allow(unreachable_patterns)]
            other => Err(not_compiled(other)),
        }
    }

    /// Wraps `inner` so that writing compresses; call [`CompressWriter::finish`] to end the stream.
    pub fn writer<W: Write>(self, inner: W) -> Result<CompressWriter<W>> {
        Ok(CompressWriter(match self {
            Compression::None => Inner::Plain(inner),
            #[cfg(feature = "gzip")]
            Compression::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            #[cfg(feature = "zstd")]
            Compression::Zstd => Inner::Zstd(
                zstd::stream::write::Encoder::new(inner, 3)
                    .map_err(|e| Error::io("zstd stream", e))?,
            ),
            #[allow(unreachable_patterns)]
            other => return Err(not_compiled(other)),
        }))
    }
}

fn not_compiled(c: Compression) -> Error {
    Error::unsupported(
        format!("{c} compression"),
        format!("this build (enable velo-datasource-core's `{c}` feature)"),
    )
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Compression::None),
            "gzip" | "gz" => Ok(Compression::Gzip),
            "zstd" | "zst" => Ok(Compression::Zstd),
            _ => Err(Error::invalid_value(
                "compression",
                s,
                "expected none, gzip or zstd",
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

enum Inner<W: Write> {
    Plain(W),
    #[cfg(feature = "gzip")]
    Gzip(flate2::write::GzEncoder<W>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// A writer that compresses into `W`.
pub struct CompressWriter<W: Write>(Inner<W>);

impl<W: Write> fmt::Debug for CompressWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CompressWriter")
    }
}

impl<W: Write> CompressWriter<W> {
    /// Ends the compressed stream and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            Inner::Plain(w) => Ok(w),
            #[cfg(feature = "gzip")]
            Inner::Gzip(w) => w.finish(),
            #[cfg(feature = "zstd")]
            Inner::Zstd(w) => w.finish(),
        }
    }

    /// The inner writer (compressed bytes written so far).
    pub fn get_ref(&self) -> &W {
        match &self.0 {
            Inner::Plain(w) => w,
            #[cfg(feature = "gzip")]
            Inner::Gzip(w) => w.get_ref(),
            #[cfg(feature = "zstd")]
            Inner::Zstd(w) => w.get_ref(),
        }
    }

    /// The inner writer, to take compressed bytes out as they are produced
    /// (a streaming upload) while compression goes on.
    pub fn get_mut(&mut self) -> &mut W {
        match &mut self.0 {
            Inner::Plain(w) => w,
            #[cfg(feature = "gzip")]
            Inner::Gzip(w) => w.get_mut(),
            #[cfg(feature = "zstd")]
            Inner::Zstd(w) => w.get_mut(),
        }
    }
}

impl<W: Write> Write for CompressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Plain(w) => w.write(buf),
            #[cfg(feature = "gzip")]
            Inner::Gzip(w) => w.write(buf),
            #[cfg(feature = "zstd")]
            Inner::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Inner::Plain(w) => w.flush(),
            #[cfg(feature = "gzip")]
            Inner::Gzip(w) => w.flush(),
            #[cfg(feature = "zstd")]
            Inner::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension() {
        assert_eq!(Compression::from_path("a.csv.gz"), Compression::Gzip);
        assert_eq!(Compression::from_path("a.jsonl.zst"), Compression::Zstd);
        assert_eq!(Compression::from_path("a.csv"), Compression::None);
        assert!("lz4".parse::<Compression>().is_err());
    }

    #[test]
    fn is_compiled_says_whether_a_codec_can_be_built() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            assert_eq!(c.is_compiled(), c.reader(io::empty()).is_ok(), "{c}");
            assert_eq!(c.is_compiled(), c.writer(io::sink()).is_ok(), "{c}");
        }
    }

    #[test]
    fn round_trip_every_compiled_codec() {
        let data = b"a,b\n1,2\n".repeat(1000);
        let mut codecs = vec![Compression::None];
        if cfg!(feature = "gzip") {
            codecs.push(Compression::Gzip);
        }
        if cfg!(feature = "zstd") {
            codecs.push(Compression::Zstd);
        }
        for c in codecs {
            let mut w = c.writer(Vec::new()).unwrap();
            w.write_all(&data).unwrap();
            let packed = w.finish().unwrap();
            let mut back = Vec::new();
            c.reader(&packed[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{c}");
        }
    }
}
