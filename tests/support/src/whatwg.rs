//! A reference parser written from the WHATWG HTML standard, section "Parsing an event stream"
//! and "Interpreting an event stream", independent of the crate's own decoder: it works on the
//! whole decoded text, character by character, as the standard describes it.

/// An event a client would dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    pub kind: String,
    pub data: String,
    pub last_event_id: String,
}

/// What a client ends up with after reading a whole stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub events: Vec<Dispatched>,
    /// The reconnection time the last valid `retry` field set.
    pub retry: Option<u128>,
    /// The event source's last event ID string after the stream.
    pub last_event_id: String,
    /// Lines that were comments (the text after the colon).
    pub comments: Vec<String>,
}

pub fn parse(bytes: &[u8]) -> Parsed {
    // "Streams must be decoded using the UTF-8 decode algorithm": a leading BOM is stripped,
    // invalid sequences become U+FFFD.
    let decoded = String::from_utf8_lossy(bytes);
    let text = decoded.strip_prefix('\u{FEFF}').unwrap_or(&decoded);

    let mut state = State::default();
    let mut line = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                state.line(&line);
                line.clear();
            }
            '\n' => {
                state.line(&line);
                line.clear();
            }
            other => line.push(other),
        }
    }
    // "Once the end of the file is reached, any pending data must be discarded."
    Parsed {
        events: state.events,
        retry: state.retry,
        last_event_id: state.last_event_id,
        comments: state.comments,
    }
}

#[derive(Default)]
struct State {
    data: String,
    event_type: String,
    last_event_id_buffer: String,
    last_event_id: String,
    retry: Option<u128>,
    events: Vec<Dispatched>,
    comments: Vec<String>,
}

impl State {
    fn line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
        } else if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.to_owned());
        } else if let Some(colon) = line.find(':') {
            let value = &line[colon + 1..];
            self.field(&line[..colon], value.strip_prefix(' ').unwrap_or(value));
        } else {
            self.field(line, "");
        }
    }

    // Kept in the standard's own shape ("if the field value does not contain NULL, then ..."),
    // rather than folded into match guards.
    #[allow(clippy::collapsible_match)]
    fn field(&mut self, name: &str, value: &str) {
        match name {
            "event" => self.event_type = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" => {
                if !value.contains('\0') {
                    self.last_event_id_buffer = value.to_owned();
                }
            }
            "retry" => {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    self.retry = Some(value.parse().unwrap_or(u128::MAX));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id = self.last_event_id_buffer.clone();
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let kind = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        self.events.push(Dispatched {
            kind,
            data: std::mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        });
        self.event_type.clear();
    }
}
