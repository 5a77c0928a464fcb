//! The path rule of the gateway: no request may climb out of the upstream's path prefix.

use percent_encoding::percent_decode;

/// Whether a path has a `.` or `..` segment under any reading an upstream is known to apply:
/// as it is, percent-decoded once or twice, with `\` read as `/`, and with `;` parameters
/// dropped from each segment (Tomcat and others read `..;x` as `..`). Any such segment could be
/// resolved against the path before it.
pub(super) fn has_dot_segment(path: &str) -> bool {
    let once: Vec<u8> = percent_decode(path.as_bytes()).collect();
    let twice: Vec<u8> = percent_decode(&once).collect();
    // Splitting on both separators and cutting each segment at its first `;` only adds
    // readings: a segment that is a dot segment without them still is one with them.
    let dotted = |path: &[u8]| {
        path.split(|&byte| byte == b'/' || byte == b'\\')
            .map(|segment| {
                segment
                    .split(|&byte| byte == b';')
                    .next()
                    .unwrap_or_default()
            })
            .any(|segment| segment == b"." || segment == b"..")
    };
    dotted(path.as_bytes()) || dotted(&once) || dotted(&twice)
}

#[cfg(test)]
mod tests {
    use http::{Request, StatusCode, Uri};
    use percent_encoding::percent_decode;

    use super::super::reply::status_reply;
    use super::super::upstream::tests::upstream;

    #[test]
    fn no_path_climbs_out_of_the_prefix() -> Result<(), Box<dyn std::error::Error>> {
        let api = upstream("http://up:9000/api")?;
        for path in [
            "/../admin",
            "/a/%2E%2e/b",
            "/a/./b",
            "/a/.%2e",
            // What a probe sent through verbatim: `;` parameters, encoded and literal `\`,
            // encoded `/`, double encoding.
            "/..;/admin",
            "/..%2f..%2fadmin",
            "/%5c..%5c..%5cadmin",
            "/\\..\\..\\admin",
            "/%252e%252e/admin",
            "/%2e%2e;/admin",
            "/a/..%3bx/b",
            "/a/%2e%2e%5cb",
        ] {
            let refused = api.forwarded(Request::get(path).body(())?);
            assert_eq!(refused.err(), Some(StatusCode::BAD_REQUEST), "{path}");
        }
        // Without a prefix too: the upstream's own root is no place to resolve them either.
        let root = upstream("http://up:9000")?;
        let refused = root.forwarded(Request::get("/..;/admin").body(())?);
        assert_eq!(refused.err(), Some(StatusCode::BAD_REQUEST));
        let connect = Request::connect("up:443").body(())?;
        assert_eq!(
            api.forwarded(connect).err(),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        Ok(())
    }

    #[test]
    fn ordinary_paths_are_forwarded_byte_for_byte() -> Result<(), Box<dyn std::error::Error>> {
        let api = upstream("http://up:9000/api")?;
        for path in [
            "/a/..b/.c",
            "/%2e%2ex/y",
            "/a%20b/%41%2F",
            "/a;b=1/c",
            "/...",
            "/.well-known/x",
            "/a/%25/b?q=..",
            "/a%5cb",
        ] {
            let forwarded = api
                .forwarded(Request::get(path).body(())?)
                .map_err(|status| format!("{path}: {status}"))?;
            assert_eq!(
                forwarded.uri().path_and_query().map(|p| p.as_str()),
                Some(&*format!("/api{path}"))
            );
        }
        Ok(())
    }

    #[test]
    fn the_asterisk_form_is_never_put_under_the_prefix() -> Result<(), Box<dyn std::error::Error>> {
        let api = upstream("http://up:9000/api")?;
        let options = Request::options(Uri::from_static("*")).body(())?;
        assert_eq!(api.forwarded(options).err(), Some(StatusCode::NO_CONTENT));
        let get = Request::get(Uri::from_static("*")).body(())?;
        assert_eq!(api.forwarded(get).err(), Some(StatusCode::BAD_REQUEST));
        let answer = status_reply::<()>(StatusCode::NO_CONTENT);
        assert!(answer.headers().is_empty());
        Ok(())
    }

    /// Ways an upstream is known to read a path before it resolves dot segments.
    #[derive(Debug, Clone, Copy)]
    enum Reading {
        Decode,
        Backslash,
        DropParams,
    }

    fn read(path: &[u8], reading: Reading) -> Vec<u8> {
        match reading {
            Reading::Decode => percent_decode(path).collect(),
            Reading::Backslash => path
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect(),
            Reading::DropParams => {
                let segments: Vec<&[u8]> = path
                    .split(|&b| b == b'/')
                    .map(|s| s.split(|&b| b == b';').next().unwrap_or_default())
                    .collect();
                segments.join(&b'/')
            }
        }
    }

    /// RFC 3986 §5.2.4, on segments: where the path ends up.
    fn resolve(path: &[u8]) -> Vec<u8> {
        let mut out: Vec<&[u8]> = Vec::new();
        for segment in path.split(|&b| b == b'/').skip(1) {
            match segment {
                b"." => {}
                b".." => {
                    out.pop();
                }
                _ => out.push(segment),
            }
        }
        let mut resolved = Vec::new();
        for segment in out {
            resolved.push(b'/');
            resolved.extend_from_slice(segment);
        }
        resolved
    }

    /// Every order of the readings, each used at most as often as upstreams do (decoding twice).
    fn readings() -> Vec<Vec<Reading>> {
        let mut all = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for seq in &frontier {
                for reading in [Reading::Decode, Reading::Backslash, Reading::DropParams] {
                    let uses = |r: fn(&Reading) -> bool| seq.iter().filter(|x| r(x)).count();
                    let ok = match reading {
                        Reading::Decode => uses(|r| matches!(r, Reading::Decode)) < 2,
                        Reading::Backslash => uses(|r| matches!(r, Reading::Backslash)) < 1,
                        Reading::DropParams => uses(|r| matches!(r, Reading::DropParams)) < 1,
                    };
                    if ok {
                        let mut longer: Vec<Reading> = seq.clone();
                        longer.push(reading);
                        next.push(longer);
                    }
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Nothing the gateway forwards resolves outside the prefix, under any order of the
        /// readings, and what it forwards is the request's path byte for byte.
        #[test]
        fn nothing_forwarded_resolves_outside_the_prefix(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "/", "\\", ".", "..", "a", "b", ";", ";x=1", "%2e", "%2E", "%252e", "%2f", "%2F",
                "%5c", "%5C", "%3b", "%25", "%", "%2", "%252f", "%255c", "%00", "~", "%41",
            ]), 0..10)
        ) {
            let path = format!("/{}", pieces.concat());
            let api = upstream("http://up:9000/api").map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let Ok(request) = Request::get(&path).body(()) else {
                return Ok(()); // not a URI at all: never reaches the gateway
            };
            if let Ok(forwarded) = api.forwarded(request) {
                let sent = forwarded.uri().path().as_bytes().to_vec();
                let expected = format!("/api{path}");
                proptest::prop_assert_eq!(&sent, expected.as_bytes());
                for readings in readings() {
                    let mut read_path = sent.clone();
                    for reading in &readings {
                        read_path = read(&read_path, *reading);
                    }
                    let resolved = resolve(&read_path);
                    proptest::prop_assert!(
                        resolved == b"/api" || resolved.starts_with(b"/api/"),
                        "{path} read by {readings:?} resolves to {}",
                        String::from_utf8_lossy(&resolved)
                    );
                }
            }
        }
    }
}
