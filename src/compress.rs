//! Per-event compression of event streams (feature `compression`).
//!
//! tower-http's `CompressionLayer` leaves `text/event-stream` alone: a compressor buffers, and
//! an event that sits in a buffer has not reached the browser. Here each frame of the stream
//! is written into one compressor per response and **flushed** (a sync flush: the bytes so far
//! decode on their own), so every event arrives at once, while the compressor's window still
//! spans the whole stream: the second `{"room": …, "user": …}` costs a few bytes.
//!
//! The encoding is negotiated from the request's `Accept-Encoding` (q-values honoured; on a tie
//! `zstd`, then `br`, `gzip`, `deflate`), the response gets `Content-Encoding` and
//! `Vary: Accept-Encoding`. Bodies that are not event streams pass through untouched.
//!
//! # What it costs
//!
//! Each open stream holds its own compressor; each frame costs a compression and a flush.
//! Measured on chat-like JSON events of about 130 bytes, each its own frame, through the
//! layer's body (`cargo bench --bench compress`, [`Level::Fastest`]; the memory is the RSS
//! per compressor after a few events; `BENCHMARKS.md` has the run):
//!
//! | encoding | bytes on the wire | CPU per event, added | memory per open stream |
//! |---|---|---|---|
//! | `zstd` (level 1) | 16 % | ≈ 1.0 µs | ≈ 115 KiB |
//! | `br` (quality 2) | 30 % | ≈ 1.4 µs | ≈ 12 KiB |
//! | `gzip` / `deflate` (level 1) | 16 % | ≈ 0.3 µs | ≈ 317 KiB |
//!
//! So with many idle connections memory, not CPU, is the price: turn off the encodings you
//! cannot afford (`Compression::new().gzip(false).deflate(false)` keeps current browsers,
//! which all offer `br` or `zstd`, on the small ones). Event bytes are still encoded once for
//! all subscribers; compression is the one per-subscriber step, because each stream's
//! compressed bytes depend on what that stream sent before.
//!
//! Crates: `flate2` on its `zlib-rs` backend (gzip, and `deflate` as HTTP means it: the zlib
//! format; 20 × faster per flushed event than the default `miniz_oxide` backend here),
//! `brotli` (pure Rust) and `zstd` (the reference C library, built with the toolchain's `cc`):
//! each is the well-kept, widely used implementation of its format, with a flush that ends a
//! block.

use std::{fmt, io::Write};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use http_body::Frame;

/// Which encodings an [`SseLayer`](crate::SseLayer) may use, and how hard it compresses. Made
/// with [`Compression::new`] (every encoding, a fast level), turned on with
/// [`SseLayer::compression`](crate::SseLayer::compression).
///
/// ```
/// use tower_sse::{SseLayer, Compression};
///
/// let layer = SseLayer::new().compression(Compression::new().br(false));
/// # drop(layer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    gzip: bool,
    deflate: bool,
    br: bool,
    zstd: bool,
    level: Level,
}

/// How hard to compress: a trade of CPU per event against bytes per event.
///
/// ```
/// use tower_sse::{Compression, compress::Level};
///
/// let c = Compression::new().level(Level::Best);
/// # drop(c);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Level {
    /// Fast (gzip/deflate 1, brotli 2, zstd 1): the default. (Brotli's level 1 gains nothing
    /// when flushed after every event.)
    #[default]
    Fastest,
    /// Each format's usual default (gzip 6, brotli 4, zstd 3).
    Default,
    /// Smaller output for more CPU (gzip 9, brotli 6, zstd 5). Higher brotli and zstd levels
    /// cost 10–100 × the CPU per flushed event for no gain on event-sized frames.
    Best,
}

impl Default for Compression {
    fn default() -> Self {
        Self::new()
    }
}

impl Compression {
    /// Every encoding allowed, [`Level::Fastest`].
    ///
    /// ```
    /// let c = tower_sse::Compression::new();
    /// # drop(c);
    /// ```
    pub fn new() -> Self {
        Self {
            gzip: true,
            deflate: true,
            br: true,
            zstd: true,
            level: Level::Fastest,
        }
    }

    /// Allow `gzip` (default on).
    ///
    /// ```
    /// let c = tower_sse::Compression::new().gzip(false);
    /// # drop(c);
    /// ```
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }

    /// Allow `deflate` (default on).
    ///
    /// ```
    /// let c = tower_sse::Compression::new().deflate(false);
    /// # drop(c);
    /// ```
    pub fn deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    /// Allow `br` (default on).
    ///
    /// ```
    /// let c = tower_sse::Compression::new().br(false);
    /// # drop(c);
    /// ```
    pub fn br(mut self, on: bool) -> Self {
        self.br = on;
        self
    }

    /// Allow `zstd` (default on).
    ///
    /// ```
    /// let c = tower_sse::Compression::new().zstd(false);
    /// # drop(c);
    /// ```
    pub fn zstd(mut self, on: bool) -> Self {
        self.zstd = on;
        self
    }

    /// How hard to compress (default [`Level::Fastest`]).
    ///
    /// ```
    /// let c = tower_sse::Compression::new().level(tower_sse::compress::Level::Default);
    /// # drop(c);
    /// ```
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// The encoding to use for a request with these headers, if any.
    pub(crate) fn negotiate(&self, headers: &HeaderMap) -> Option<Encoding> {
        let mut best: Option<(u16, Encoding)> = None;
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim();
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .map_or(Some(1000), parse_q);
                let Some(q) = q.filter(|&q| q > 0) else {
                    continue;
                };
                let candidates: &[Encoding] = match name.to_ascii_lowercase().as_str() {
                    "zstd" => &[Encoding::Zstd],
                    "br" => &[Encoding::Br],
                    "gzip" | "x-gzip" => &[Encoding::Gzip],
                    "deflate" => &[Encoding::Deflate],
                    "*" => &[
                        Encoding::Zstd,
                        Encoding::Br,
                        Encoding::Gzip,
                        Encoding::Deflate,
                    ],
                    _ => &[],
                };
                for &encoding in candidates {
                    if !self.allows(encoding) {
                        continue;
                    }
                    let better = best
                        .is_none_or(|(bq, be)| q > bq || (q == bq && encoding.rank() < be.rank()));
                    if better {
                        best = Some((q, encoding));
                    }
                }
            }
        }
        best.map(|(_, encoding)| encoding)
    }

    fn allows(&self, encoding: Encoding) -> bool {
        match encoding {
            Encoding::Gzip => self.gzip,
            Encoding::Deflate => self.deflate,
            Encoding::Br => self.br,
            Encoding::Zstd => self.zstd,
        }
    }
}

/// A q-value in thousandths (`q=0.5` → 500), or `None` when malformed.
fn parse_q(q: &str) -> Option<u16> {
    let value: f32 = q.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

/// A negotiated encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Zstd,
    Br,
    Gzip,
    Deflate,
}

impl Encoding {
    /// Preference on a tie (lower first).
    fn rank(self) -> u8 {
        match self {
            Self::Zstd => 0,
            Self::Br => 1,
            Self::Gzip => 2,
            Self::Deflate => 3,
        }
    }

    fn token(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Br => "br",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }

    /// Sets `Content-Encoding` and adds `Accept-Encoding` to `Vary`.
    pub(crate) fn set_headers(self, headers: &mut HeaderMap) {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(self.token()),
        );
        headers.remove(header::CONTENT_LENGTH);
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }

    /// A compressor for one response.
    pub(crate) fn encoder(self, level: Level) -> std::io::Result<Encoder> {
        let (flate, brotli, zstd) = match level {
            Level::Fastest => (1, 2, 1),
            Level::Default => (6, 4, 3),
            Level::Best => (9, 6, 5),
        };
        let flate = flate2::Compression::new(flate);
        Ok(match self {
            Self::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate)),
            Self::Deflate => Encoder::Deflate(flate2::write::ZlibEncoder::new(Vec::new(), flate)),
            Self::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                brotli,
                BROTLI_WINDOW_BITS,
            ))),
            Self::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), zstd)?;
                encoder.window_log(ZSTD_WINDOW_LOG)?;
                Encoder::Zstd(encoder)
            }
        })
    }
}

/// Brotli's window: 256 KiB (the default, 4 MiB, would be held by every open stream).
const BROTLI_WINDOW_BITS: u32 = 18;

/// zstd's window: 128 KiB (level 3's default, 2 MiB, would be held by every open stream).
const ZSTD_WINDOW_LOG: u32 = 17;

/// One response's compressor: frames in, flushed compressed bytes out.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Deflate(flate2::write::ZlibEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// Compresses `data` and flushes: the bytes returned decode to everything written so far.
    pub(crate) fn frame(&mut self, data: &[u8]) -> std::io::Result<Bytes> {
        fn run<W: Write>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
            w.write_all(data)?;
            w.flush()
        }
        let out = match self {
            Self::Gzip(w) => {
                run(w, data)?;
                std::mem::take(w.get_mut())
            }
            Self::Deflate(w) => {
                run(w, data)?;
                std::mem::take(w.get_mut())
            }
            Self::Br(w) => {
                run(&mut **w, data)?;
                std::mem::take(w.get_mut())
            }
            Self::Zstd(w) => {
                run(w, data)?;
                std::mem::take(w.get_mut())
            }
        };
        Ok(Bytes::from(out))
    }
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip(_) => "Encoder::Gzip",
            Self::Deflate(_) => "Encoder::Deflate",
            Self::Br(_) => "Encoder::Br",
            Self::Zstd(_) => "Encoder::Zstd",
        })
    }
}

/// What one request negotiated: the encoding and level its response will use, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chosen(Option<(Encoding, Level)>);

impl Chosen {
    pub(crate) fn negotiate(config: &crate::body::Config, headers: &HeaderMap) -> Self {
        Self(
            config
                .compression
                .and_then(|c| Some((c.negotiate(headers)?, c.level))),
        )
    }
}

/// The compressor of one event-stream body, or none.
#[derive(Debug, Default)]
pub(crate) struct Slot(Option<Box<Encoder>>);

impl Slot {
    /// No compression.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Starts compressing a response with these headers, if an encoding was negotiated and
    /// the handler did not encode the response itself; sets the response headers to match.
    pub(crate) fn start(chosen: Chosen, headers: &mut HeaderMap) -> Self {
        let Some((encoding, level)) = chosen.0 else {
            return Self(None);
        };
        if headers.contains_key(header::CONTENT_ENCODING) {
            return Self(None);
        }
        match encoding.encoder(level) {
            Ok(encoder) => {
                encoding.set_headers(headers);
                Self(Some(Box::new(encoder)))
            }
            Err(err) => {
                tracing::warn!(error = %err, ?encoding, "no compressor; sending the stream uncompressed");
                Self(None)
            }
        }
    }

    /// A data frame compressed and flushed (so it decodes at once); other frames as they are.
    #[inline]
    pub(crate) fn apply(&mut self, frame: Frame<Bytes>) -> Result<Frame<Bytes>, crate::BoxError> {
        match &mut self.0 {
            None => Ok(frame),
            Some(encoder) => match frame.into_data() {
                Ok(data) => Ok(Frame::data(encoder.frame(&data)?)),
                Err(frame) => Ok(frame),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Compressed bytes in, the plain bytes they complete out.
    type Decode = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn negotiates_by_q_then_preference() {
        let all = Compression::new();
        assert_eq!(all.negotiate(&HeaderMap::new()), None);
        assert_eq!(
            all.negotiate(&accept("gzip, deflate, br, zstd")),
            Some(Encoding::Zstd)
        );
        assert_eq!(
            all.negotiate(&accept("gzip, deflate, br")),
            Some(Encoding::Br)
        );
        assert_eq!(
            all.negotiate(&accept("gzip;q=1, br;q=0.5")),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            all.negotiate(&accept("br;q=0, gzip;q=0.1")),
            Some(Encoding::Gzip)
        );
        assert_eq!(all.negotiate(&accept("identity")), None);
        assert_eq!(all.negotiate(&accept("*")), Some(Encoding::Zstd));
        assert_eq!(
            all.negotiate(&accept("gzip;q=nonsense, deflate")),
            Some(Encoding::Deflate)
        );
        assert_eq!(all.negotiate(&accept("GZIP")), Some(Encoding::Gzip));
        let no_zstd = Compression::new().zstd(false);
        assert_eq!(
            no_zstd.negotiate(&accept("zstd, gzip")),
            Some(Encoding::Gzip)
        );
        assert_eq!(no_zstd.negotiate(&accept("zstd")), None);
    }

    /// Each frame, once flushed, decodes to everything written so far: an event is never
    /// held back in the compressor.
    #[test]
    fn every_frame_decodes_at_once_in_every_encoding() {
        // Chat-like events (what the chat example sends).
        let events: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "id: {}\nevent: message\ndata: {{\"room\":\"lobby\",\"user\":\"user{}\",\"text\":\"hello there, number {i}\"}}\n\n",
                    1000 + i,
                    i % 7
                )
            })
            .collect();
        for encoding in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Br,
            Encoding::Zstd,
        ] {
            let mut encoder = encoding.encoder(Level::Fastest).unwrap();
            let mut decoded: Decode = match encoding {
                Encoding::Gzip => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    Box::new(move |b| {
                        d.write_all(b).unwrap();
                        d.flush().unwrap();
                        std::mem::take(d.get_mut())
                    })
                }
                Encoding::Deflate => {
                    let mut d = flate2::write::ZlibDecoder::new(Vec::new());
                    Box::new(move |b| {
                        d.write_all(b).unwrap();
                        d.flush().unwrap();
                        std::mem::take(d.get_mut())
                    })
                }
                Encoding::Br => {
                    let mut d = brotli::DecompressorWriter::new(Vec::new(), 4096);
                    Box::new(move |b| {
                        d.write_all(b).unwrap();
                        d.flush().unwrap();
                        std::mem::take(d.get_mut())
                    })
                }
                Encoding::Zstd => {
                    let mut d = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
                    Box::new(move |b| {
                        d.write_all(b).unwrap();
                        d.flush().unwrap();
                        std::mem::take(d.get_mut())
                    })
                }
            };
            let (mut plain, mut compressed) = (0, 0);
            for event in &events {
                let frame = encoder.frame(event.as_bytes()).unwrap();
                compressed += frame.len();
                plain += event.len();
                assert_eq!(
                    String::from_utf8(decoded(&frame)).unwrap(),
                    *event,
                    "{encoding:?}: the event came out whole, at once"
                );
            }
            assert!(
                compressed < plain,
                "{encoding:?}: {compressed} of {plain} bytes"
            );
        }
    }
}
