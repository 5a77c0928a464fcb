//! Token verification at its boundary: the conformance suites' own tokens, forged, expired,
//! mistargeted and malformed ones, algorithm confusion, and presentation.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

/// The key Mercure's conformance suites sign their tokens with.
const SUITE_KEY: &[u8] = b"!ChangeThisMercureHubJWTSecretKey!";

/// The draft suite's publisher token (`conformance-tests/mercure.spec.ts`): HS256, `at+jwt`,
/// `aud` https://localhost/.well-known/mercure, `iss` https://localhost, `exp` 2100-01-01,
/// publish and subscribe on `*`.
const DRAFT_SUITE_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJhdWQiOiJodHRwczovL2xvY2FsaG9zdC8ud2VsbC1rbm93bi9tZXJjdXJlIiwiaXNzIjoiaHR0cHM6Ly9sb2NhbGhvc3QiLCJhdXRob3JpemF0aW9uX2RldGFpbHMiOlt7InR5cGUiOiJodHRwczovL21lcmN1cmUucm9ja3MvYXV0aG9yaXphdGlvbi1kZXRhaWwiLCJhY3Rpb25zIjpbInB1Ymxpc2giXSwidG9waWNzIjpbeyJtYXRjaCI6IioifV19LHsidHlwZSI6Imh0dHBzOi8vbWVyY3VyZS5yb2Nrcy9hdXRob3JpemF0aW9uLWRldGFpbCIsImFjdGlvbnMiOlsic3Vic2NyaWJlIl0sInRvcGljcyI6W3sibWF0Y2giOiIqIn1dfV0sImV4cCI6NDEwMjQ0NDgwMH0.z_S8IP5WZsCK8h3pcq0PB5zvJE0OdTrGA70khAYJQy4";

/// The pre-standard suite's token (tag v0.24.2): HS256 without `typ`, `mercure.publish` and
/// `mercure.subscribe` `["*"]`, no `exp`.
const PRE_SUITE_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJtZXJjdXJlIjp7InB1Ymxpc2giOlsiKiJdLCJzdWJzY3JpYmUiOlsiKiJdfX0.bVXdlWXwfw9ySx7-iV5OpUSHo34RkjUdVzDLBcc6l_g";

fn hub() -> Url {
    crate::mercure::test_url("https://localhost/.well-known/mercure")
}

fn verifier() -> Verifier {
    Verifier::new(TokenKey::hmac(SUITE_KEY), hub())
}

/// A draft token signed with the suite's key, with `claims` over the defaults.
fn draft(claims: Value) -> String {
    let mut all = json!({
        "aud": "https://localhost/.well-known/mercure",
        "iss": "https://localhost",
        "exp": 4_102_444_800u64,
    });
    if let (Some(all), Some(claims)) = (all.as_object_mut(), claims.as_object()) {
        for (name, value) in claims {
            all.insert(name.clone(), value.clone());
        }
    }
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, &all, &EncodingKey::from_secret(SUITE_KEY))
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
}

fn detail(actions: &[&str], topics: Value) -> Value {
    json!({ "type": AUTHORIZATION_DETAIL_TYPE, "actions": actions, "topics": topics })
}

fn invalid(result: Result<Grants, TokenError>) -> bool {
    matches!(result, Err(TokenError::Invalid(_)))
}

#[test]
fn verifiers_and_grants_can_be_shared_across_tasks() {
    fn shared<T: Send + Sync + Clone>() {}
    shared::<Verifier>();
    shared::<Grants>();
}

#[test]
fn the_conformance_suites_tokens_verify_and_grant_everything() {
    let grants = verifier()
        .verify(DRAFT_SUITE_TOKEN)
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(grants.may_publish("https://example.net/foo/x"));
    assert!(grants.may_subscribe("anything"));
    assert_eq!(
        grants.expires_at(),
        UNIX_EPOCH.checked_add(Duration::from_secs(4_102_444_800))
    );
    // The pre-standard token only where pre-standard tokens are accepted.
    assert!(invalid(verifier().verify(PRE_SUITE_TOKEN)));
    let grants = verifier()
        .pre_standard(true)
        .verify(PRE_SUITE_TOKEN)
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(grants.may_publish("https://example.net/foo/x"));
    assert!(grants.expires_at().is_none());
}

#[test]
fn forged_expired_and_mistargeted_tokens_are_invalid() {
    let verifier = verifier();
    // Another key.
    let other = Verifier::new(TokenKey::hmac(b"another key entirely, also long"), hub());
    assert!(invalid(other.verify(DRAFT_SUITE_TOKEN)));
    // A changed claim (`exp` one second later) under the old signature.
    let mut parts: Vec<&str> = DRAFT_SUITE_TOKEN.split('.').collect();
    parts[1] = "eyJhdWQiOiJodHRwczovL2xvY2FsaG9zdC8ud2VsbC1rbm93bi9tZXJjdXJlIiwiaXNzIjoiaHR0cHM6Ly9sb2NhbGhvc3QiLCJleHAiOjQxMDI0NDQ4MDF9";
    assert!(invalid(verifier.verify(&parts.join("."))));
    // `alg: none` (`{"alg":"none","typ":"at+jwt"}`), with or without a signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0";
    let claims = DRAFT_SUITE_TOKEN.split('.').nth(1).unwrap_or_default();
    assert!(invalid(verifier.verify(&format!("{none}.{claims}."))));
    assert!(invalid(verifier.verify(&format!("{none}.{claims}.xyz"))));
    // Expired, not yet valid, another audience or issuer, or missing one.
    assert!(invalid(
        verifier.verify(&draft(json!({"exp": 1_000_000_000u64})))
    ));
    assert!(invalid(
        verifier.verify(&draft(json!({"nbf": 4_000_000_000u64})))
    ));
    assert!(invalid(verifier.verify(&draft(
        json!({"aud": "https://other/.well-known/mercure"})
    ))));
    assert!(invalid(
        verifier.verify(&draft(json!({"iss": "https://evil.example"})))
    ));
    assert!(invalid(verifier.verify(&draft(json!({"iss": null})))));
    // Missing `exp`, `aud` or `iss`; `iss` as a list, even one naming the issuer.
    let without = |claim: &str| {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        let mut claims = json!({"aud": "https://localhost/.well-known/mercure",
                                "iss": "https://localhost", "exp": 4_102_444_800u64});
        if let Some(claims) = claims.as_object_mut() {
            claims.remove(claim);
        }
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SUITE_KEY))
            .unwrap_or_else(|e| panic!("{e}")) // ok: test
    };
    for claim in ["exp", "aud", "iss"] {
        assert!(invalid(verifier.verify(&without(claim))), "without {claim}");
    }
    let listed_issuer = draft(json!({"iss": ["https://localhost", "https://x"]}));
    assert!(invalid(verifier.verify(&listed_issuer)));
    // A draft-shaped token whose `typ` is not `at+jwt` is refused where only draft tokens are
    // accepted; `application/at+jwt`, in any case, is `at+jwt`.
    for (typ, ok) in [
        (None, false),
        (Some("JWT"), false),
        (Some("application/at+jwt"), true),
        (Some("AT+JWT"), true),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        let claims = json!({"aud": "https://localhost/.well-known/mercure",
                            "iss": "https://localhost", "exp": 4_102_444_800u64});
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SUITE_KEY))
            .unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert_eq!(verifier.verify(&token).is_ok(), ok, "{typ:?}");
    }
    // A fractional `exp` still ends the stream.
    let fractional = verifier
        .verify(&draft(json!({"exp": 4_102_444_800.5})))
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(fractional.expires_at().is_some());
    // `aud` as a list naming the hub is fine.
    let listed =
        draft(json!({"aud": ["https://a.example", "https://localhost/.well-known/mercure"]}));
    assert!(verifier.verify(&listed).is_ok());
    // Garbage.
    for garbage in ["", ".", "a.b.c", "not a token", "\u{0}\u{0}.\u{0}"] {
        assert!(invalid(verifier.verify(garbage)), "{garbage:?}");
    }
}

#[test]
fn an_hmac_token_is_refused_by_an_rsa_verifier_algorithm_confusion() {
    // A public key as an HMAC secret is the classic confusion: the verifier only ever uses
    // its key's own algorithm.
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u
+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh
kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ
0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg
cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc
mwIDAQAB
-----END PUBLIC KEY-----";
    let rsa = TokenKey::rsa_pem(RSA_PUBLIC.as_bytes()).unwrap_or_else(|e| panic!("{e}")); // ok: test
    let confused = Verifier::new(rsa, hub());
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    let claims = json!({"aud": "https://localhost/.well-known/mercure", "iss": "https://localhost",
                        "exp": 4_102_444_800u64});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(invalid(confused.verify(&token)));
    assert!(matches!(
        TokenKey::rsa_pem(b"not a key"),
        Err(TokenError::Key(_))
    ));
}

#[test]
fn grants_are_read_all_or_nothing() {
    let verifier = verifier();
    let grants =
        |details: Value| verifier.verify(&draft(json!({ "authorization_details": details })));
    // Publish on one URL pattern, subscribe on an exact topic with a payload; unknown actions
    // and other detail types grant nothing.
    let ok = grants(json!([
        detail(&["publish", "archive"], json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}])),
        {"type": AUTHORIZATION_DETAIL_TYPE, "actions": ["subscribe"],
         "topics": [{"match": "https://example.com/users/7"}], "payload": {"user": 7}},
        {"type": "https://other.example/detail", "actions": ["publish"], "topics": "whatever"},
    ]))
    .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(ok.may_publish("https://example.com/books/1"));
    assert!(!ok.may_publish("https://example.com/users/7"));
    assert!(ok.may_subscribe("https://example.com/users/7"));
    assert!(!ok.may_subscribe("https://example.com/books/1"));
    assert_eq!(
        ok.payload_for("https://example.com/users/7"),
        Some(&json!({"user": 7}))
    );
    // No Mercure detail: a valid token that grants nothing.
    let nothing = grants(json!([])).unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(!nothing.may_publish("x") && !nothing.may_subscribe("x"));
    // One malformed detail refuses the whole token.
    let good = detail(&["publish"], json!([{"match": "*"}]));
    for bad in [
        detail(&[], json!([{"match": "*"}])),
        json!({"type": AUTHORIZATION_DETAIL_TYPE, "actions": [1], "topics": [{"match": "*"}]}),
        detail(&["publish"], json!([])),
        detail(&["publish"], json!(["*"])),
        detail(&["publish"], json!([{"match": ""}])),
        detail(&["publish"], json!([{"match": "x", "match_type": "regex"}])),
        detail(
            &["publish"],
            json!([{"match": "https://x/(", "match_type": "urlpattern"}]),
        ),
        detail(&["publish"], json!([{"match": "a\u{0}b"}])),
        // Checked even where no known action would use it.
        detail(
            &["read"],
            json!([{"match": "https://x/(", "match_type": "urlpattern"}]),
        ),
        json!({"type": AUTHORIZATION_DETAIL_TYPE, "actions": ["subscribe"],
               "topics": [{"match": "*"}], "payload": "not an object"}),
    ] {
        assert!(invalid(grants(json!([good.clone(), bad.clone()]))), "{bad}");
    }
    assert!(invalid(grants(json!("not an array"))));
    // Past the limits.
    let many: Vec<Value> = (0..=MAX_DETAILS).map(|_| good.clone()).collect();
    assert!(invalid(grants(Value::Array(many))));
    let topics: Vec<Value> = (0..=MAX_MATCHERS)
        .map(|i| json!({"match": format!("t{i}")}))
        .collect();
    assert!(invalid(grants(json!([detail(
        &["publish"],
        Value::Array(topics)
    )]))));
}

#[test]
fn pre_standard_grants_are_selectors() {
    let verifier = verifier().pre_standard(true);
    let token = |claims: Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SUITE_KEY),
        )
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
    };
    let grants = verifier
        .verify(&token(json!({"mercure": {
            "publish": ["https://example.com/books/{id}"],
            "subscribe": ["https://example.com/users/7", "https://example.com/groups/{g}"],
            "payload": {"user": 7}}})))
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(grants.may_publish("https://example.com/books/1"));
    assert!(!grants.may_publish("https://example.com/users/7"));
    assert!(grants.may_subscribe("https://example.com/groups/admins"));
    assert_eq!(
        grants.payload_for("https://example.com/users/7"),
        Some(&json!({"user": 7}))
    );
    // The pre-standard payload is every subscription's, granted or not.
    assert_eq!(
        grants.payload_for("https://example.com/other"),
        Some(&json!({"user": 7}))
    );
    // Without the claim, with a bad list, or expired.
    assert!(invalid(verifier.verify(&token(json!({"sub": "x"})))));
    assert!(invalid(
        verifier.verify(&token(json!({"mercure": {"publish": "*"}})))
    ));
    assert!(invalid(
        verifier.verify(&token(json!({"mercure": {"publish": [1]}})))
    ));
    assert!(invalid(verifier.verify(&token(
        json!({"mercure": {}, "exp": 1_000_000_000u64})
    ))));
}

#[test]
fn the_token_is_the_bearer_header_else_a_cookie_and_errors_map_to_rfc_6750() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                map.append(name, value);
            }
        }
        map
    };
    let cookies = [COOKIE, PRE_STANDARD_COOKIE];
    let found = |pairs: &[(&str, &str)]| presented_token(&headers(pairs), &cookies);
    assert_eq!(found(&[]), Ok(None));
    assert_eq!(
        found(&[("authorization", "Bearer a.b.c")]),
        Ok(Some("a.b.c".into()))
    );
    assert_eq!(
        found(&[("authorization", "bearer  a.b.c ")]),
        Ok(Some("a.b.c".into()))
    );
    assert_eq!(
        found(&[("cookie", "x=1; mercureAuthorization=p.q.r")]),
        Ok(Some("p.q.r".into()))
    );
    // The header wins over a cookie; the first cookie name given wins over the next.
    assert_eq!(
        found(&[
            ("authorization", "Bearer h.h.h"),
            ("cookie", "__Secure-mercure_access_token=c.c.c")
        ]),
        Ok(Some("h.h.h".into()))
    );
    assert_eq!(
        found(&[(
            "cookie",
            "mercureAuthorization=p.p.p; __Secure-mercure_access_token=d.d.d"
        )]),
        Ok(Some("d.d.d".into()))
    );
    for bad in [
        vec![("authorization", "Basic dXNlcjpwYXNz")],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer a b")],
        vec![
            ("authorization", "Bearer a.b.c"),
            ("authorization", "Bearer d.e.f"),
        ],
    ] {
        assert!(
            matches!(found(&bad), Err(TokenError::BadRequest(_))),
            "{bad:?}"
        );
    }
    let url = "https://localhost/.well-known/oauth-protected-resource/.well-known/mercure";
    let metadata = Some(url);
    let challenge = |error: TokenError| {
        (
            error.status().as_u16(),
            error
                .challenge(metadata)
                .and_then(|value| value.to_str().ok().map(str::to_owned)),
        )
    };
    assert_eq!(
        challenge(TokenError::Missing),
        (401, Some(format!("Bearer resource_metadata=\"{url}\"")))
    );
    assert_eq!(
        challenge(TokenError::Invalid("why".into())),
        (
            401,
            Some(format!(
                "Bearer error=\"invalid_token\", resource_metadata=\"{url}\""
            ))
        )
    );
    assert_eq!(
        challenge(TokenError::InsufficientScope),
        (
            403,
            Some(format!(
                "Bearer error=\"insufficient_scope\", resource_metadata=\"{url}\""
            ))
        )
    );
    assert_eq!(
        TokenError::BadRequest("x".into())
            .challenge(None)
            .as_ref()
            .and_then(|v| v.to_str().ok()),
        Some("Bearer error=\"invalid_request\"")
    );
    assert_eq!(
        TokenError::Missing.challenge(None),
        HeaderValue::from_str("Bearer").ok()
    );
}
