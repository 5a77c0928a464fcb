//! A model of the lenient parsers found in the field, which dispatch any non-empty block: the
//! Python `openai` SDK's `SSEDecoder` (openai-python #2722, #3833) dispatches a block ending in a
//! blank line whenever its event name, data, retry or (ever, since it is never reset) last id is
//! set, so `retry: 3000` + blank line, or, once any id was seen, a comment + blank line, becomes
//! an event with empty data, which the SDK then fails to parse as JSON. The WHATWG algorithm
//! dispatches only blocks with data.

/// A block such a parser dispatches although a WHATWG client dispatches nothing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spurious {
    /// The bytes of the block, up to and including its blank line.
    pub block: String,
}

/// Every block of `bytes` that a dispatch-on-any-non-empty-block parser would dispatch without
/// data. Empty for a stream that only such parsers' bugs could break.
pub fn spurious_dispatches(bytes: &[u8]) -> Vec<Spurious> {
    let text = String::from_utf8_lossy(bytes);
    let mut spurious = Vec::new();
    let mut block = String::new();
    let (mut event, mut data, mut retry) = (false, false, false);
    let mut last_id_seen = false;
    for line in split_lines(&text) {
        block.push_str(line);
        block.push('\n');
        if line.is_empty() {
            if !data && (event || retry || last_id_seen) {
                spurious.push(Spurious {
                    block: std::mem::take(&mut block),
                });
            }
            block.clear();
            (event, data, retry) = (false, false, false);
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let name = line.split(':').next().unwrap_or_default();
        match name {
            "event" => event = true,
            "data" => data = true,
            "retry" => retry = true,
            "id" => last_id_seen = true,
            _ => {}
        }
    }
    spurious
}

/// The lines of `text`, split on CR, LF and CRLF; an unfinished last line is left out.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut at) = (0, 0);
    while at < bytes.len() {
        match bytes[at] {
            b'\n' => {
                lines.push(&text[start..at]);
                start = at + 1;
            }
            b'\r' => {
                lines.push(&text[start..at]);
                if bytes.get(at + 1) == Some(&b'\n') {
                    at += 1;
                }
                start = at + 1;
            }
            _ => {}
        }
        at += 1;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_known_triggers() {
        assert_eq!(spurious_dispatches(b"retry: 3000\n\ndata: x\n\n").len(), 1);
        assert_eq!(
            spurious_dispatches(b":\n\ndata: x\nid: 1\n\n:\n\n").len(),
            1
        );
        assert_eq!(spurious_dispatches(b"event: x\n\n").len(), 1);
        assert!(spurious_dispatches(b"retry: 3000\n:\ndata: x\nid: 1\n:\n").is_empty());
        assert!(spurious_dispatches(b":\n\ndata: x\n\n").is_empty());
    }
}
