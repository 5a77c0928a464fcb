//! [`Matcher`]: which topics a subscription's routing parameter, or a token's grant, names.
//!
//! Three kinds, as the two generations of the protocol define them: an exact topic (the draft's
//! `match` and `match_exact`), a WHATWG URL Pattern (the draft's `match_urlpattern`, relative
//! patterns and topics resolved against the hub's URL), and the pre-standard selector
//! (`topic=`: an exact topic, or an RFC 6570 URI template). `*` matches every topic, whatever
//! the kind. Every match runs in linear time (the `regex` crate), whatever a client sends; a
//! URL pattern's own regular-expression groups (`(...)`, which a client could make compile to
//! megabytes) are refused, while named groups (`:id`) and wildcards (`*`) are not groups.

use std::fmt::Write as _;

use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions};

/// The longest pattern a matcher accepts, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;

/// How a [`Matcher`] compares topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MatchType {
    /// The topic, byte for byte (`match`, `match_exact`; `exact` in a token).
    Exact,
    /// A WHATWG URL Pattern (`match_urlpattern`; `urlpattern` in a token).
    UrlPattern,
    /// A pre-standard selector (`topic=`): the topic itself, or an RFC 6570 URI template.
    Selector,
}

impl MatchType {
    /// Its name in the draft (`exact`, `urlpattern`), or `selector` for the pre-standard kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
            Self::Selector => "selector",
        }
    }
}

/// Why a pattern is not a matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatcherError {
    /// Longer than [`MAX_PATTERN_LEN`].
    TooLong,
    /// It holds a control or format character (C0, DEL, C1, Unicode `Cf`).
    ControlCharacter,
    /// Not a valid pattern of its kind (a URL Pattern that does not compile).
    Invalid(String),
}

impl std::fmt::Display for MatcherError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLong => write!(f, "a topic matcher is at most {MAX_PATTERN_LEN} bytes"),
            Self::ControlCharacter => f.write_str("a topic matcher holds no control character"),
            Self::Invalid(why) => write!(f, "invalid topic matcher pattern: {why}"),
        }
    }
}

impl std::error::Error for MatcherError {}

/// A topic matcher.
///
/// ```
/// use tower_sse::mercure::{Matcher, MatchType};
///
/// let hub = url::Url::parse("https://example.com/.well-known/mercure")?;
/// let books = Matcher::new(MatchType::UrlPattern, "https://example.com/books/:id", &hub)?;
/// assert!(books.matches("https://example.com/books/42"));
/// assert!(!books.matches("https://example.com/authors/42"));
/// // Relative patterns and topics are resolved against the hub's URL.
/// let mine = Matcher::new(MatchType::UrlPattern, "/users/:id/inbox", &hub)?;
/// assert!(mine.matches("https://example.com/users/7/inbox"));
/// let old = Matcher::new(MatchType::Selector, "https://example.com/books/{id}", &hub)?;
/// assert!(old.matches("https://example.com/books/42"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Matcher {
    kind: MatchType,
    pattern: String,
    how: How,
}

#[derive(Debug)]
enum How {
    Any,
    Exact,
    UrlPattern {
        pattern: Box<UrlPattern>,
        /// The hub's URL, against which relative topics are resolved.
        base: Box<Url>,
    },
    Template(regex::Regex),
}

impl Matcher {
    /// A matcher of `kind` for `pattern`; `hub` is the hub's URL, the base of relative URL
    /// patterns and topics.
    pub fn new(kind: MatchType, pattern: &str, hub: &Url) -> Result<Self, MatcherError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(MatcherError::TooLong);
        }
        if has_control(pattern) {
            return Err(MatcherError::ControlCharacter);
        }
        let how = if pattern == "*" {
            How::Any
        } else {
            match kind {
                MatchType::Exact => How::Exact,
                MatchType::UrlPattern => url_pattern(pattern, hub)?,
                MatchType::Selector => match uri_template(pattern) {
                    Some(template) => How::Template(template),
                    None => How::Exact,
                },
            }
        };
        Ok(Self {
            kind,
            pattern: pattern.to_owned(),
            how,
        })
    }

    /// Whether `topic` is one this matcher names.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.how {
            How::Any => true,
            How::Exact => topic == self.pattern,
            How::UrlPattern { pattern, base } => {
                let Ok(url) = Url::options().base_url(Some(base)).parse(topic) else {
                    // A topic that is not a URL reference never matches a URL pattern.
                    return false;
                };
                pattern
                    .test(UrlPatternMatchInput::Url(url))
                    .unwrap_or(false)
            }
            // A selector also names itself (a template granted as it is written).
            How::Template(template) => topic == self.pattern || template.is_match(topic),
        }
    }

    /// The one topic this matcher names, when it names only one (an exact matcher, or a
    /// selector that is no template): a hub can then index its subscriber by that topic.
    pub fn exact_topic(&self) -> Option<&str> {
        matches!(self.how, How::Exact).then_some(self.pattern.as_str())
    }

    /// The kind of matcher.
    pub fn match_type(&self) -> MatchType {
        self.kind
    }

    /// The pattern, as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }
}

/// Whether `text` holds a character the protocol refuses in topics, ids, types and matchers:
/// C0 controls, DEL, C1 controls, or a Unicode format character (`Cf`).
pub(crate) fn has_control(text: &str) -> bool {
    text.chars().any(|c| c.is_control() || is_format(c))
}

/// The Unicode format characters (`Cf`) a topic could hide behind: soft hyphen, Arabic and
/// Syriac marks, the zero-width and bidirectional controls, word joiners, the BOM,
/// interlinear annotation marks, and the tag characters.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}' | '\u{890}'..='\u{891}'
        | '\u{8E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// Whether `spec` is an RFC 6570 variable: a name (letters, digits, `_`, `.`, percent-encoded
/// octets), then a prefix length (`:3`) or an explode (`*`), or neither.
fn is_varspec(spec: &str) -> bool {
    let name = match spec.split_once(':') {
        Some((name, length)) => {
            if length.is_empty() || length.len() > 4 || !length.bytes().all(|b| b.is_ascii_digit())
            {
                return false;
            }
            name
        }
        None => spec.strip_suffix('*').unwrap_or(spec),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'%'))
}

/// The most memory a URI template selector's expression may compile to.
const REGEX_SIZE_LIMIT: usize = 128 * 1024;

/// Whether a URL pattern holds a regular-expression group (an unescaped `(`): its contents
/// are a client's to write, and compile to as much as the `regex` crate's default limit
/// (megabytes for `(\w{1,200})`), for every matcher of every subscriber. Named groups
/// (`:id`) and wildcards (`*`) compile to small fixed expressions.
fn has_regexp_group(pattern: &str) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => return true,
            _ => {}
        }
    }
    false
}

/// A URL pattern: an absolute one as it is, a relative one against the hub's URL.
fn url_pattern(pattern: &str, hub: &Url) -> Result<How, MatcherError> {
    let invalid = |error: urlpattern::Error| MatcherError::Invalid(error.to_string());
    if has_regexp_group(pattern) {
        return Err(MatcherError::Invalid(
            "regular-expression groups are not accepted; use :name or *".into(),
        ));
    }
    let init = match UrlPatternInit::parse_constructor_string::<regex::Regex>(pattern, None) {
        Ok(init) => init,
        Err(urlpattern::Error::BaseUrlRequired) => {
            UrlPatternInit::parse_constructor_string::<regex::Regex>(pattern, Some(hub.clone()))
                .map_err(invalid)?
        }
        Err(error) => return Err(invalid(error)),
    };
    // Never case-insensitive: only hosts are, through URL canonicalisation.
    let compiled = UrlPattern::parse(init, UrlPatternOptions::default()).map_err(invalid)?;
    Ok(How::UrlPattern {
        pattern: Box::new(compiled),
        base: Box::new(hub.clone()),
    })
}

/// The most expressions a URI template selector may hold; one with more is an exact topic.
const MAX_EXPRESSIONS: usize = 32;

/// An RFC 6570 URI template as an anchored regular expression, or `None` when `selector` is not
/// one (no expression, or a malformed one): it is then an exact topic. Each expression matches
/// what its variables could expand to, or nothing.
fn uri_template(selector: &str) -> Option<regex::Regex> {
    if !selector.contains('{') {
        return None;
    }
    // Unreserved characters and percent-encoded octets; reserved ones too for `+` and `#`.
    const UNRESERVED: &str = r"A-Za-z0-9\-._~";
    const RESERVED: &str = r":/?#\[\]@!$&'()*+,;=";
    let mut regex = String::from("^");
    let mut rest = selector;
    let mut expressions = 0;
    while let Some(open) = rest.find('{') {
        expressions += 1;
        if expressions > MAX_EXPRESSIONS {
            return None;
        }
        let (literal, after) = rest.split_at(open);
        if literal.contains('}') {
            return None;
        }
        regex.push_str(&regex::escape(literal));
        let close = after.find('}')?;
        let expression = &after[1..close];
        rest = &after[close + 1..];
        let (operator, variables) = match expression.chars().next()? {
            op @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (Some(op), &expression[1..]),
            _ => (None, expression),
        };
        if !variables.split(',').all(is_varspec) {
            return None;
        }
        let (prefix, class) = match operator {
            None => ("", format!("[{UNRESERVED},]")),
            Some('+') => ("", format!("[{UNRESERVED}{RESERVED}]")),
            Some('#') => ("#", format!("[{UNRESERVED}{RESERVED}]")),
            Some('.') => (".", format!("[{UNRESERVED},]")),
            Some('/') => ("/", format!("[{UNRESERVED},/]")),
            Some(';') => (";", format!("[{UNRESERVED},;=]")),
            Some('?') => ("?", format!("[{UNRESERVED},&=]")),
            Some(_) => ("&", format!("[{UNRESERVED},&=]")),
        };
        let prefix = regex::escape(prefix);
        let _ = write!(regex, "(?:{prefix}(?:{class}|%[0-9A-Fa-f]{{2}})*)?");
    }
    if rest.contains('}') {
        return None;
    }
    regex.push_str(&regex::escape(rest));
    regex.push('$');
    regex::RegexBuilder::new(&regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Url {
        super::super::test_url("https://example.com/.well-known/mercure")
    }

    fn matcher(kind: MatchType, pattern: &str) -> Matcher {
        match Matcher::new(kind, pattern, &hub()) {
            Ok(matcher) => matcher,
            Err(e) => panic!("{pattern}: {e}"), // ok: test
        }
    }

    #[test]
    fn matchers_can_be_shared_across_tasks() {
        fn shared<T: Send + Sync>() {}
        shared::<Matcher>();
    }

    #[test]
    fn exact_is_byte_for_byte_and_star_is_everything() {
        let exact = matcher(MatchType::Exact, "https://example.com/books/1");
        assert!(exact.matches("https://example.com/books/1"));
        assert!(!exact.matches("https://example.com/books/1/"));
        assert!(!exact.matches("https://EXAMPLE.com/books/1"));
        assert!(!exact.matches("https://example.com/books/%31"));
        // No template or pattern meaning in an exact matcher.
        let braces = matcher(MatchType::Exact, "https://example.com/books/{id}");
        assert!(!braces.matches("https://example.com/books/1"));
        assert!(braces.matches("https://example.com/books/{id}"));
        for kind in [MatchType::Exact, MatchType::UrlPattern, MatchType::Selector] {
            let any = matcher(kind, "*");
            assert!(any.matches("anything at all"), "{kind:?}");
            assert!(any.matches(""), "{kind:?}");
        }
    }

    #[test]
    fn url_patterns_match_absolute_and_relative_topics() {
        let books = matcher(MatchType::UrlPattern, "https://example.net/foo/:random");
        assert!(books.matches("https://example.net/foo/3fa85f64"));
        assert!(!books.matches("https://example.net/bar/3fa85f64"));
        assert!(!books.matches("https://example.net/foo/a/b"));
        assert!(
            !books.matches("https://[oops/foo/x"),
            "not a URL: never a match"
        );
        // Hosts are case-insensitive through canonicalisation; paths are not.
        assert!(books.matches("https://EXAMPLE.net/foo/x"));
        assert!(
            !matcher(MatchType::UrlPattern, "https://example.net/Foo/:x")
                .matches("https://example.net/foo/x")
        );
        // Relative patterns and topics are resolved against the hub's URL.
        let events = matcher(
            MatchType::UrlPattern,
            "/.well-known/mercure/subscriptions/:type/:match/:subscriber",
        );
        assert!(events.matches("/.well-known/mercure/subscriptions/exact/a/urn%3Auuid%3A1"));
        assert!(events.matches(
            "https://example.com/.well-known/mercure/subscriptions/exact/a/urn%3Auuid%3A1"
        ));
        assert!(!events.matches("https://other.example/.well-known/mercure/subscriptions/a/b/c"));
        let wildcard = matcher(MatchType::UrlPattern, "https://example.com/books/*");
        assert!(wildcard.matches("https://example.com/books/1/chapters/2"));
    }

    #[test]
    fn pre_standard_selectors_are_topics_or_uri_templates() {
        let template = matcher(MatchType::Selector, "https://example.net/foo/{random}");
        assert!(template.matches("https://example.net/foo/3fa85f64"));
        assert!(template.matches("https://example.net/foo/"));
        assert!(!template.matches("https://example.net/foo/a/b"));
        assert!(!template.matches("https://example.net/bar/x"));
        // A template names itself too, as a grant written the same way.
        assert!(template.matches("https://example.net/foo/{random}"));
        let reserved = matcher(MatchType::Selector, "https://example.net/{+path}");
        assert!(reserved.matches("https://example.net/a/b/c?d=e"));
        let path = matcher(MatchType::Selector, "https://example.net/books{/id,part}");
        assert!(path.matches("https://example.net/books/1/2"));
        assert!(path.matches("https://example.net/books"));
        let query = matcher(MatchType::Selector, "https://example.net/s{?q,page}");
        assert!(query.matches("https://example.net/s?q=x&page=2"));
        // Regex characters in literals are literals.
        let dots = matcher(MatchType::Selector, "a.b/{x}");
        assert!(dots.matches("a.b/y"));
        assert!(!dots.matches("aXb/y"));
        // Not a template: an exact topic.
        for exact in [
            "https://example.net/{",
            "https://example.net/{}",
            "a}{b",
            "{a b}",
        ] {
            let selector = matcher(MatchType::Selector, exact);
            assert!(selector.matches(exact), "{exact}");
            assert!(!selector.matches("https://example.net/x"), "{exact}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        let hub = hub();
        let long = "x".repeat(MAX_PATTERN_LEN + 1);
        assert_eq!(
            Matcher::new(MatchType::Exact, &long, &hub).err(),
            Some(MatcherError::TooLong)
        );
        for control in ["a\nb", "a\u{7f}", "a\u{85}", "a\u{200B}b", "\u{FEFF}x"] {
            assert_eq!(
                Matcher::new(MatchType::Exact, control, &hub).err(),
                Some(MatcherError::ControlCharacter),
                "{control:?}"
            );
        }
        assert!(matches!(
            Matcher::new(MatchType::UrlPattern, "https://example.com/(unclosed", &hub),
            Err(MatcherError::Invalid(_))
        ));
        // Regular-expression groups (which could compile to megabytes each) are refused;
        // escaped parentheses, named groups and wildcards are not groups.
        for grouped in [
            "https://example.com/(\\w{1,200})",
            "https://example.com/:id(\\d+)",
            "https://example.com/(books|authors)/:id",
        ] {
            assert!(
                matches!(
                    Matcher::new(MatchType::UrlPattern, grouped, &hub),
                    Err(MatcherError::Invalid(_))
                ),
                "{grouped}"
            );
        }
        let literal = Matcher::new(
            MatchType::UrlPattern,
            "https://example.com/a\\(b\\)/:id/*",
            &hub,
        );
        assert!(literal.is_ok_and(|m| m.matches("https://example.com/a(b)/1/x/y")));
        // A template with too many expressions is an exact topic, not a huge expression.
        let many = "{a}".repeat(MAX_EXPRESSIONS + 1);
        let exact = Matcher::new(MatchType::Selector, &many, &hub);
        assert!(exact.is_ok_and(|m| m.matches(&many) && !m.matches("x")));
    }
}
