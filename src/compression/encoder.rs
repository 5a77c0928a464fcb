//! [`Compressor`]: one stream's compressor context, which turns each frame the layer writes
//! into bytes the client can decode whole the moment they arrive.

use std::io;

use brotli::enc::encode::{
    BrotliEncoderOperation, BrotliEncoderParameter, BrotliEncoderStateStruct,
};
use brotli::enc::StandardAlloc;
use bytes::Bytes;
use flate2::{Compress, FlushCompress, Status};
use http_body::Frame;
use zstd::stream::raw::{Encoder as ZstdEncoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::CParameter;

use super::{Coding, Compression};

/// The output room asked for beyond the input at each step: enough for a flush's block
/// headers and a trailer.
const SLACK: usize = 64;

/// The end of an event in the layer's own encoding (every line ends with `\n`, and only an
/// event's end is a blank line).
const EVENT_END: &[u8] = b"\n\n";

/// How the bytes written so far are made decodable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Everything so far is decodable; later bytes may refer back to it.
    Sync,
    /// Everything so far is decodable, and nothing later refers back to it.
    Reset,
    /// The end of the compressed stream.
    Finish,
}

/// One stream's compressor context.
pub(crate) struct Compressor {
    codec: Codec,
    /// Whether each event is compressed on its own.
    isolate_events: bool,
    /// Whether the compressed stream has ended (its trailer written, or the codec failed).
    ended: bool,
}

enum Codec {
    Zstd(ZstdEncoder<'static>),
    Brotli(Box<BrotliEncoderStateStruct<StandardAlloc>>),
    Gzip(Box<Compress>),
}

impl Compressor {
    /// A context for `coding` with the layer's settings. Fails only when the codec cannot
    /// allocate its state.
    pub(crate) fn new(coding: Coding, settings: &Compression) -> io::Result<Self> {
        let bits = u32::from(settings.window_bits);
        let codec = match coding {
            Coding::Zstd => {
                let mut encoder = ZstdEncoder::new(settings.zstd_level)?;
                // The hash and chain tables sized to the window, so a small window holds
                // little memory whatever the level's own sizes.
                for parameter in [
                    CParameter::WindowLog(bits),
                    CParameter::HashLog(bits),
                    CParameter::ChainLog(bits),
                    CParameter::ChecksumFlag(false),
                ] {
                    encoder.set_parameter(parameter)?;
                }
                Codec::Zstd(encoder)
            }
            Coding::Brotli => {
                let mut state = Box::new(BrotliEncoderStateStruct::new(StandardAlloc::default()));
                let set = state.set_parameter(
                    BrotliEncoderParameter::BROTLI_PARAM_QUALITY,
                    settings.brotli_quality,
                ) && state
                    .set_parameter(BrotliEncoderParameter::BROTLI_PARAM_LGWIN, bits)
                    && state.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_MODE, 1);
                if !set {
                    return Err(codec_error("brotli refused its parameters"));
                }
                Codec::Brotli(state)
            }
            Coding::Gzip => {
                let level = flate2::Compression::new(settings.gzip_level);
                // `window_bits` is within 10..=15, the range `new_gzip` takes.
                Codec::Gzip(Box::new(Compress::new_gzip(level, settings.window_bits)))
            }
        };
        Ok(Self {
            codec,
            isolate_events: settings.isolate_events,
            ended: false,
        })
    }

    /// The body's next frame, compressed: each data frame flushed whole, and after the last
    /// one the compressed stream's end. A codec that fails (it could not allocate) ends the
    /// body: the client sees the stream cut, and reconnects.
    pub(crate) fn next(&mut self, frame: Option<Frame<Bytes>>) -> Option<Frame<Bytes>> {
        if self.ended {
            return None;
        }
        let compressed = match frame.map(Frame::into_data) {
            // A data frame stays a frame, even one that compressed to nothing.
            Some(Ok(data)) => self.frame(&data).map(Some),
            // Trailers, which an event stream never has, pass as they are.
            Some(Err(frame)) => return Some(frame),
            None => {
                self.ended = true;
                self.finish()
                    .map(|trailer| (!trailer.is_empty()).then_some(trailer))
            }
        };
        match compressed {
            Ok(bytes) => bytes.map(Frame::data),
            Err(error) => {
                tracing::warn!(%error, "event stream compression failed; the stream ends");
                self.ended = true;
                None
            }
        }
    }

    /// Whether the compressed stream has ended.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// `frame` compressed, with everything in it decodable from these bytes and the ones
    /// before.
    fn frame(&mut self, frame: &[u8]) -> io::Result<Bytes> {
        let mut out = Vec::with_capacity(frame.len() / 2 + SLACK);
        if self.isolate_events {
            // Each event, and what follows the last one, alone.
            let mut rest = frame;
            while !rest.is_empty() {
                let end = memchr::memmem::find(rest, EVENT_END)
                    .map_or(rest.len(), |at| at + EVENT_END.len());
                let (event, after) = rest.split_at(end);
                self.codec.compress(event, &mut out, Flush::Reset)?;
                rest = after;
            }
        } else {
            self.codec.compress(frame, &mut out, Flush::Sync)?;
        }
        // Room reserved for a large frame that compressed well is not kept while it waits to
        // be written.
        if out.capacity() > 2 * out.len() + 4096 {
            out.shrink_to_fit();
        }
        Ok(Bytes::from(out))
    }

    /// The end of the compressed stream (the trailer, for gzip its checksum and length).
    fn finish(&mut self) -> io::Result<Bytes> {
        let mut out = Vec::with_capacity(SLACK);
        self.codec.compress(&[], &mut out, Flush::Finish)?;
        Ok(Bytes::from(out))
    }
}

impl Codec {
    /// Compresses `input` onto `out`, then flushes as `flush` says.
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>, flush: Flush) -> io::Result<()> {
        match self {
            Self::Zstd(encoder) => zstd(encoder, input, out, flush),
            Self::Brotli(state) => brotli(state, input, out, flush),
            Self::Gzip(compress) => gzip(compress, input, out, flush),
        }
    }
}

fn zstd(
    encoder: &mut ZstdEncoder<'static>,
    input: &[u8],
    out: &mut Vec<u8>,
    flush: Flush,
) -> io::Result<()> {
    let mut input = InBuffer::around(input);
    while input.pos() < input.src.len() {
        out.reserve(input.src.len() - input.pos() + SLACK);
        let len = out.len();
        encoder.run(&mut input, &mut OutBuffer::around_pos(out, len))?;
    }
    loop {
        out.reserve(SLACK);
        let len = out.len();
        let mut output = OutBuffer::around_pos(out, len);
        // What is left to write: 0 once the flush (or the frame's end) is complete.
        let left = match flush {
            Flush::Sync => encoder.flush(&mut output)?,
            Flush::Reset | Flush::Finish => encoder.finish(&mut output, true)?,
        };
        if left == 0 {
            break;
        }
    }
    if flush == Flush::Reset {
        // The next event starts a new frame, with nothing to refer back to.
        encoder.reinit()?;
    }
    Ok(())
}

fn brotli(
    state: &mut BrotliEncoderStateStruct<StandardAlloc>,
    input: &[u8],
    out: &mut Vec<u8>,
    flush: Flush,
) -> io::Result<()> {
    let operation = match flush {
        Flush::Sync | Flush::Reset => BrotliEncoderOperation::BROTLI_OPERATION_FLUSH,
        Flush::Finish => BrotliEncoderOperation::BROTLI_OPERATION_FINISH,
    };
    let mut available_in = input.len();
    let mut in_offset = 0;
    loop {
        let start = out.len();
        let room = available_in + SLACK;
        out.resize(start + room, 0);
        let mut available_out = room;
        let mut out_offset = 0;
        let done = state.compress_stream(
            operation,
            &mut available_in,
            input,
            &mut in_offset,
            &mut available_out,
            &mut out[start..],
            &mut out_offset,
            &mut None,
            &mut |_: &mut _, _: &mut _, _, _: &mut _| (),
        );
        out.truncate(start + out_offset);
        if !done {
            return Err(codec_error("brotli failed to compress"));
        }
        let complete = match flush {
            Flush::Finish => state.is_finished(),
            Flush::Sync | Flush::Reset => available_in == 0 && !state.has_more_output(),
        };
        if complete {
            return Ok(());
        }
    }
}

fn gzip(compress: &mut Compress, input: &[u8], out: &mut Vec<u8>, flush: Flush) -> io::Result<()> {
    let flush_mode = match flush {
        Flush::Sync => FlushCompress::Sync,
        // A full flush also forgets the dictionary.
        Flush::Reset => FlushCompress::Full,
        Flush::Finish => FlushCompress::Finish,
    };
    let mut rest = input;
    loop {
        out.reserve(rest.len() + SLACK);
        let before = compress.total_in();
        let status = compress
            .compress_vec(rest, out, flush_mode)
            .map_err(|error| codec_error(&format!("gzip failed to compress: {error}")))?;
        // At most `rest.len()`, so it fits.
        let consumed = usize::try_from(compress.total_in() - before).unwrap_or(rest.len());
        rest = &rest[consumed.min(rest.len())..];
        // A flush is complete when it left output room unused (zlib's rule); the end, when
        // the stream ended.
        let complete = match flush {
            Flush::Finish => status == Status::StreamEnd,
            Flush::Sync | Flush::Reset => rest.is_empty() && out.len() < out.capacity(),
        };
        if complete {
            return Ok(());
        }
    }
}

fn codec_error(message: &str) -> io::Error {
    io::Error::other(message.to_owned())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    const CODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// Everything `compressed` decodes to so far (it may be a prefix of a stream).
    fn decode(coding: Coding, compressed: &[u8]) -> Vec<u8> {
        let mut decoded = Vec::new();
        let mut byte = [0u8; 1];
        // Read a byte at a time until the decoder needs more input than there is: what a
        // client can show from the bytes it has.
        let mut reader: Box<dyn Read> = match coding {
            Coding::Zstd => match zstd::stream::read::Decoder::new(compressed) {
                Ok(decoder) => Box::new(decoder),
                Err(_) => return decoded,
            },
            Coding::Brotli => Box::new(brotli::Decompressor::new(compressed, 4096)),
            Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
        };
        while let Ok(1) = reader.read(&mut byte) {
            decoded.push(byte[0]);
        }
        decoded
    }

    fn compressor(coding: Coding, settings: &Compression) -> Compressor {
        match Compressor::new(coding, settings) {
            Ok(compressor) => compressor,
            Err(error) => panic!("{coding}: {error}"), // ok: test
        }
    }

    #[test]
    fn every_frame_decodes_whole_from_the_bytes_sent_so_far() {
        let frames: Vec<Vec<u8>> = (0..40)
            .map(|i| {
                format!(
                    "id: {i}\ndata: {{\"choices\":[{{\"delta\":{{\"content\":\"tok{i}\"}}}}]}}\n\n"
                )
                .into_bytes()
            })
            .chain([b":\n".to_vec(), b"retry: 3000\n".to_vec()])
            .collect();
        for coding in CODINGS {
            for settings in [Compression::new(), Compression::new().window_bits(10)] {
                let mut compressor = compressor(coding, &settings);
                let mut sent = Vec::new();
                let mut expected = Vec::new();
                for frame in &frames {
                    let bytes = compressor.frame(frame).unwrap_or_default();
                    assert!(!bytes.is_empty(), "{coding}: a frame wrote nothing");
                    sent.extend_from_slice(&bytes);
                    expected.extend_from_slice(frame);
                    assert_eq!(decode(coding, &sent), expected, "{coding}");
                }
                let trailer = compressor.finish().unwrap_or_default();
                sent.extend_from_slice(&trailer);
                assert_eq!(decode(coding, &sent), expected, "{coding}");
                // Repeated envelopes compress across events.
                assert!(
                    sent.len() * 2 < expected.len(),
                    "{coding}: {} of {}",
                    sent.len(),
                    expected.len()
                );
            }
        }
    }

    #[test]
    fn an_isolated_event_compresses_the_same_whatever_came_before() {
        let secret = b"data: token=8f2a1c9e7b\n\n";
        for coding in [Coding::Zstd, Coding::Gzip] {
            let isolated = Compression::new().isolate_events();
            let after = |before: &[u8], settings: &Compression| {
                let mut compressor = compressor(coding, settings);
                let _ = compressor.frame(before);
                compressor.frame(secret).unwrap_or_default()
            };
            // The attacker's guess shares the secret's bytes; the other does not.
            let guess = b"data: token=8f2a1c9e7b\n\n";
            let other = b"data: qqqqqqqqqqqqqqqq\n\n";
            assert_eq!(after(guess, &isolated), after(other, &isolated), "{coding}");
            // Shared, a correct guess makes the secret's bytes shorter: what BREACH measures.
            let shared = Compression::new();
            assert!(
                after(guess, &shared).len() < after(other, &shared).len(),
                "{coding}"
            );
            // Two events in one frame are compressed apart, and both decode.
            let mut compressor = compressor(coding, &isolated);
            let mut sent = compressor.frame(b":\n").unwrap_or_default().to_vec();
            let two = [guess.as_slice(), secret.as_slice(), b":\n"].concat();
            sent.extend_from_slice(&compressor.frame(&two).unwrap_or_default());
            assert_eq!(decode(coding, &sent), [b":\n".as_slice(), &two].concat());
        }
        assert_eq!(
            Compression::new()
                .isolate_events()
                .negotiate(&header_map("br")),
            None
        );
    }

    #[test]
    fn an_empty_frame_stays_a_frame_and_the_end_comes_once() {
        for coding in CODINGS {
            let mut compressor = compressor(coding, &Compression::new());
            let mut sent = Vec::new();
            for frame in [&b"data: a\n\n"[..], b"", b""] {
                let next = compressor.next(Some(Frame::data(Bytes::from_static(frame))));
                let Some(Ok(bytes)) = next.map(Frame::into_data) else {
                    panic!("{coding}: a data frame ended the body"); // ok: test
                };
                sent.extend_from_slice(&bytes);
            }
            let Some(Ok(trailer)) = compressor.next(None).map(Frame::into_data) else {
                panic!("{coding}: no end"); // ok: test
            };
            sent.extend_from_slice(&trailer);
            assert!(compressor.is_ended());
            assert!(compressor.next(None).is_none(), "{coding}");
            assert_eq!(decode(coding, &sent), b"data: a\n\n", "{coding}");
        }
    }

    fn header_map(accept_encoding: &'static str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static(accept_encoding),
        );
        headers
    }
}
