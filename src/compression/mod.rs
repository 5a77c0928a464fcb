//! Compressed event streams (feature `compression`): [`Compression`] tells
//! [`SseLayer::compression`](crate::SseLayer::compression) which codings to offer and how hard
//! to work; each stream that a client asked to be compressed gets one compressor context of its
//! own, flushed after every frame, so an event is decodable the moment its frame arrives.
//!
//! ```
//! use tower_sse::compression::{Coding, Compression};
//! use tower_sse::SseLayer;
//!
//! // zstd, then br, then gzip, for clients whose `Accept-Encoding` allows them.
//! let layer = SseLayer::new().compression(Compression::new());
//! // Only gzip, each event compressed on its own (a stream that mixes secrets with data an
//! // attacker can choose: see "Compression" in the README).
//! let isolated = SseLayer::new().compression(
//!     Compression::new().codings([Coding::Gzip]).isolate_events(),
//! );
//! # let _ = (layer, isolated);
//! ```

mod encoder;
mod negotiate;

pub(crate) use encoder::Compressor;

/// A content coding the layer can compress a stream with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// Zstandard (RFC 8878), `zstd`.
    Zstd,
    /// Brotli (RFC 7932), `br`.
    Brotli,
    /// gzip (RFC 1952), `gzip`.
    Gzip,
}

impl Coding {
    /// The coding's name in `Accept-Encoding` and `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }
}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How [`SseLayer::compression`](crate::SseLayer::compression) compresses event streams.
///
/// A stream is compressed only when its request's `Accept-Encoding` allows one of
/// [`codings`](Self::codings) (q-values honoured: the highest wins, ties go to the order given
/// here); otherwise it is sent as it is. Each compressed stream holds one compressor context
/// for its whole life, so events compress against the ones before them, and every frame the
/// layer writes (events, heartbeats, the retry hint, the shutdown and error events) is flushed
/// whole: nothing waits for a buffer to fill.
///
/// The defaults are chosen for many open streams: a 4 KiB window (`window_bits` 12), zstd
/// level 3, brotli quality 4, gzip level 6. The README's "Compression" section gives the memory
/// each compressed stream holds with them.
#[derive(Debug, Clone)]
#[must_use]
pub struct Compression {
    pub(crate) codings: Vec<Coding>,
    pub(crate) zstd_level: i32,
    pub(crate) brotli_quality: u32,
    pub(crate) gzip_level: u32,
    pub(crate) window_bits: u8,
    pub(crate) isolate_events: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            codings: vec![Coding::Zstd, Coding::Brotli, Coding::Gzip],
            zstd_level: 3,
            brotli_quality: 4,
            gzip_level: 6,
            window_bits: 12,
            isolate_events: false,
        }
    }
}

impl Compression {
    /// zstd, br and gzip, in that order of preference, at the default levels.
    pub fn new() -> Self {
        Self::default()
    }

    /// The codings to offer, most preferred first (duplicates are ignored; none at all turns
    /// compression off).
    pub fn codings(mut self, codings: impl IntoIterator<Item = Coding>) -> Self {
        self.codings.clear();
        for coding in codings {
            if !self.codings.contains(&coding) {
                self.codings.push(coding);
            }
        }
        self
    }

    /// The zstd level, from 1 (fastest) to 19 (default 3); out of range values are clamped.
    pub fn zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level.clamp(1, 19);
        self
    }

    /// The brotli quality, from 0 (fastest) to 11 (default 4); clamped.
    pub fn brotli_quality(mut self, quality: u32) -> Self {
        self.brotli_quality = quality.min(11);
        self
    }

    /// The gzip level, from 1 (fastest) to 9 (default 6); clamped.
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip_level = level.clamp(1, 9);
        self
    }

    /// The base-2 logarithm of the history each coding matches against, from 10 (1 KiB) to 15
    /// (32 KiB); clamped (default 12, 4 KiB: a few dozen events of a token stream). A larger
    /// window finds repeats further back and holds more memory per stream (zstd's tables are
    /// sized to it; gzip's and brotli's hash tables are not).
    pub fn window_bits(mut self, bits: u8) -> Self {
        self.window_bits = bits.clamp(10, 15);
        self
    }

    /// Compresses every event on its own: no event refers back to another. For streams that
    /// carry secrets (a token, a user's data) beside data an attacker can influence, where a
    /// shared context would let the attacker guess the secret from the compressed sizes
    /// (BREACH). Each event still compresses against itself; what is lost is the gain across
    /// events. gzip restarts its dictionary at each event (a full flush) and zstd starts a new
    /// frame; brotli has no such reset, so it is not offered (with brotli alone in
    /// [`codings`](Self::codings), nothing is compressed).
    pub fn isolate_events(mut self) -> Self {
        self.isolate_events = true;
        self
    }

    /// The compressor of a stream to a request that accepts `coding` (if any), and the head
    /// that says so: `Content-Encoding`, and `Vary: Accept-Encoding` on every event stream made
    /// of a response, since the choice depends on it. A compressor that cannot be made (its codec could not
    /// allocate) leaves the stream uncompressed.
    pub(crate) fn start(
        &self,
        coding: Option<Coding>,
        headers: &mut http::HeaderMap,
    ) -> Option<Box<Compressor>> {
        crate::headers::add_vary(headers, "accept-encoding");
        let coding = coding?;
        match Compressor::new(coding, self) {
            Ok(compressor) => {
                headers.insert(
                    http::header::CONTENT_ENCODING,
                    http::HeaderValue::from_static(coding.as_str()),
                );
                Some(Box::new(compressor))
            }
            Err(error) => {
                tracing::warn!(%error, %coding, "event stream sent uncompressed");
                None
            }
        }
    }

    /// The coding for a request with these headers, if any.
    pub(crate) fn negotiate(&self, headers: &http::HeaderMap) -> Option<Coding> {
        let offered = self
            .codings
            .iter()
            .copied()
            .filter(|coding| !(self.isolate_events && *coding == Coding::Brotli));
        negotiate::choose(headers, offered)
    }
}
