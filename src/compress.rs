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
//! layer's body (`cargo bench --bench compress`, [`Level::Fastest`]); memory is the RSS per
//! compressor after 340 KiB of events went through it (`BENCHMARKS.md` has the runs):
//!
//! | encoding | bytes on the wire | CPU per event, added | memory per open stream |
//! |---|---|---|---|
//! | `zstd` (level 1, 4 KiB window) | 16 % | ≈ 0.9 µs | ≈ 120 KiB |
//! | `br` (quality 2, 4 KiB window) | 30 % | ≈ 1.4 µs | ≈ 320 KiB |
//! | `gzip` / `deflate` (level 1) | 16 % | ≈ 0.5 µs | ≈ 320 KiB |
//!
//! So with many idle connections memory, not CPU, is the price, and a client picks the
//! encoding by what it offers: cap open streams ([`SseLayer::max_streams`](crate::SseLayer::max_streams)),
//! and turn off what you cannot afford: `Compression::new().br(false).gzip(false).deflate(false)`
//! keeps to zstd (current Chrome and Firefox offer it; Safari does not, and gets the stream
//! uncompressed). Event bytes are still encoded once for all subscribers; compression is the
//! one per-subscriber step, because each stream's compressed bytes depend on what that stream
//! sent before. When the stream ends (its events end, or a shutdown sends the final event) the
//! compressed stream is ended too (gzip's trailer, zlib's checksum, the last brotli block, the
//! end of the zstd frame), so strict decoders read it to its end.
//!
//! Crates: `flate2` on its `zlib-rs` backend (gzip, and `deflate` as HTTP means it: the zlib
//! format; 20 × faster per flushed event than the default `miniz_oxide` backend here),
//! `brotli` (pure Rust) and `zstd` (the reference C library, built with the toolchain's `cc`):
//! each is the well-kept, widely used implementation of its format, with a flush that ends a
//! block.

use std::{fmt, io::Write};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

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

    /// The encoding to use for a request with these headers, if any (RFC 9110 §12.5.3): each
    /// allowed coding weighs what the request gave it by name, else what it gave `*`; weight 0
    /// (by name, or by `*` for codings not named) refuses it; the heaviest wins, on a tie in
    /// the order zstd, br, gzip, deflate. A coding named twice keeps its smaller weight (a
    /// refusal is never overridden), an item with a malformed weight is ignored.
    pub(crate) fn negotiate(&self, headers: &HeaderMap) -> Option<Encoding> {
        const CODINGS: [Encoding; 4] = [
            Encoding::Zstd,
            Encoding::Br,
            Encoding::Gzip,
            Encoding::Deflate,
        ];
        let mut named: [Option<u16>; 4] = [None; 4];
        let mut star: Option<u16> = None;
        let keep_smaller = |slot: &mut Option<u16>, q: u16| {
            *slot = Some(slot.map_or(q, |old| old.min(q)));
        };
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';').map(str::trim);
                let name = parts.next().unwrap_or("");
                let weight =
                    parts.find(|p| p.get(..2).is_some_and(|key| key.eq_ignore_ascii_case("q=")));
                let Some(q) = weight.map_or(Some(1000), |p| parse_q(&p[2..])) else {
                    continue;
                };
                if name == "*" {
                    keep_smaller(&mut star, q);
                    continue;
                }
                let coding = match name.to_ascii_lowercase().as_str() {
                    "zstd" => Encoding::Zstd,
                    "br" => Encoding::Br,
                    "gzip" | "x-gzip" => Encoding::Gzip,
                    "deflate" => Encoding::Deflate,
                    _ => continue,
                };
                keep_smaller(&mut named[usize::from(coding.rank())], q);
            }
        }
        CODINGS
            .into_iter()
            .filter(|&coding| self.allows(coding))
            .filter_map(|coding| {
                let q = named[usize::from(coding.rank())].or(star)?;
                (q > 0).then_some((q, coding))
            })
            // Heaviest first; on a tie the first in `CODINGS` (max_by_key keeps the last).
            .rev()
            .max_by_key(|&(q, _)| q)
            .map(|(_, coding)| coding)
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

    /// Sets `Content-Encoding` (`Vary` is the caller's).
    pub(crate) fn set_headers(self, headers: &mut HeaderMap) {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(self.token()),
        );
        headers.remove(header::CONTENT_LENGTH);
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

/// Brotli's window: 4 KiB. Every open stream holds its compressor; a larger window costs
/// memory per stream and, on chat-like events, compressed worse (measured: 64 KiB 32 %, 4 KiB
/// 25 % of the bytes).
const BROTLI_WINDOW_BITS: u32 = 12;

/// zstd's window: 4 KiB. Every open stream holds its compressor: 128 KiB of window grew it to
/// 246 KiB after 340 KiB of events, 4 KiB keeps it at 120 KiB, and compresses as well.
const ZSTD_WINDOW_LOG: u32 = 12;

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

impl Encoder {
    /// Ends the compressed stream: the bytes that complete it (trailer, last block).
    pub(crate) fn finish(self) -> std::io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Self::Gzip(w) => w.finish()?,
            Self::Deflate(w) => w.finish()?,
            Self::Br(w) => w.into_inner(),
            Self::Zstd(w) => w.finish()?,
        }))
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

/// What one request negotiated: the encoding and level its response will use, if any, and
/// whether compression is on at all (then the response varies by `Accept-Encoding`, even when
/// nothing was acceptable).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chosen {
    enabled: bool,
    chosen: Option<(Encoding, Level)>,
}

/// A layer's compression setting (`None`: off).
pub(crate) type Setting = Option<Compression>;

/// Off (a layer's default).
pub(crate) const OFF: Setting = None;

impl Chosen {
    pub(crate) fn negotiate(setting: Setting, headers: &HeaderMap) -> Self {
        Self {
            enabled: setting.is_some(),
            chosen: setting.and_then(|c| Some((c.negotiate(headers)?, c.level))),
        }
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there.
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',').any(|name| {
                name.trim().eq_ignore_ascii_case("accept-encoding") || name.trim() == "*"
            })
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
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
        if headers.contains_key(header::CONTENT_ENCODING) {
            // Encoded by the handler: its choice, its headers.
            return Self(None);
        }
        if chosen.enabled {
            vary_on_accept_encoding(headers);
        }
        let Some((encoding, level)) = chosen.chosen else {
            return Self(None);
        };
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

    /// The bytes that end the compressed stream, once (`None`: no compressor, or already ended).
    pub(crate) fn finish(&mut self) -> Result<Option<Bytes>, crate::BoxError> {
        match self.0.take() {
            None => Ok(None),
            Some(encoder) => Ok(Some(encoder.finish()?).filter(|b| !b.is_empty())),
        }
    }

    /// Whether bytes that end the compressed stream are still to be sent.
    pub(crate) fn pending(&self) -> bool {
        self.0.is_some()
    }

    /// A data frame's bytes compressed and flushed (so they decode at once).
    #[inline]
    pub(crate) fn apply(&mut self, data: Bytes) -> Result<Bytes, crate::BoxError> {
        match &mut self.0 {
            None => Ok(data),
            Some(encoder) => Ok(encoder.frame(&data)?),
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
        // A refusal by name is not undone by `*` (found in review), in either order.
        assert_eq!(all.negotiate(&accept("zstd;q=0, *")), Some(Encoding::Br));
        let gzip_only = Compression::new().zstd(false).br(false).deflate(false);
        assert_eq!(gzip_only.negotiate(&accept("*, gzip;q=0")), None);
        assert_eq!(gzip_only.negotiate(&accept("gzip;q=0, *")), None);
        // `*;q=0` refuses what is not named; named codings keep their weight.
        assert_eq!(all.negotiate(&accept("gzip, *;q=0")), Some(Encoding::Gzip));
        assert_eq!(all.negotiate(&accept("*;q=0")), None);
        // Weights are case-insensitive, and named twice the smaller one counts.
        assert_eq!(all.negotiate(&accept("zstd;Q=0, br")), Some(Encoding::Br));
        assert_eq!(
            all.negotiate(&accept("zstd, zstd;q=0, gzip")),
            Some(Encoding::Gzip)
        );
        // Across header lines too; a line that is not ASCII is ignored (no panic).
        let mut two = accept("zstd;q=0");
        two.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0.5"),
        );
        assert_eq!(all.negotiate(&two), Some(Encoding::Gzip));
        assert_eq!(all.negotiate(&accept_bytes(b"gzip;\xc3\xa9=1, br")), None);
        assert_eq!(
            all.negotiate(&accept("br;q=0.5, gzip;q=0.9")),
            Some(Encoding::Gzip)
        );
    }

    fn accept_bytes(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_bytes(value).unwrap(),
        );
        headers
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
