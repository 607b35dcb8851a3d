use super::*;

fn key() -> AuthKey {
    AuthKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
}

fn claims(doc: &str, perm: Perm, exp: u64) -> Claims {
    Claims {
        doc: doc.into(),
        perm,
        exp,
        jti: "t1".into(),
        sub: Some("u1".into()),
        name: None,
        iat: None,
    }
}

#[test]
fn minted_tokens_verify() {
    let token = mint(&key(), &claims("notes/today", Perm::Write, 2000));
    let got = verify(&key(), &token, 1000).unwrap();
    assert_eq!(got, claims("notes/today", Perm::Write, 2000));
    assert!(got.check(&DocName::parse("notes/today").unwrap(), true).is_ok());
}

#[test]
fn tampering_expiry_and_other_keys_are_refused() {
    let token = mint(&key(), &claims("a", Perm::Read, 2000));
    assert_eq!(verify(&key(), &token, 2000), Err(AuthError::Expired));
    let other = AuthKey::new(b"another key of enough length!!".to_vec()).unwrap();
    assert_eq!(verify(&other, &token, 1000), Err(AuthError::Signature));
    // swap in a payload granting write
    let forged_payload = B64.encode(serde_json::to_vec(&claims("a", Perm::Write, 2000)).unwrap());
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = &forged_payload;
    assert_eq!(verify(&key(), &parts.join("."), 1000), Err(AuthError::Signature));
    assert!(matches!(verify(&key(), "abc", 1000), Err(AuthError::Malformed(_))));
    assert!(matches!(verify(&key(), "a.b.c", 1000), Err(AuthError::Malformed(_))));
}

#[test]
fn alg_none_is_refused() {
    let header = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = B64.encode(serde_json::to_vec(&claims("*", Perm::Write, 9999)).unwrap());
    assert_eq!(
        verify(&key(), &format!("{header}.{payload}."), 1),
        Err(AuthError::Algorithm)
    );
}

#[test]
fn patterns_match_prefixes() {
    assert!(pattern_matches("team-a/*", "team-a/plan"));
    assert!(!pattern_matches("team-a/*", "team-b/plan"));
    assert!(!pattern_matches("team-a/*", "team-a"));
    assert!(pattern_matches("*", "anything"));
    assert!(pattern_matches("exact", "exact"));
    assert!(!pattern_matches("exact", "exact/more"));
    let read = claims("team-a/*", Perm::Read, 1);
    let doc = DocName::parse("team-a/x").unwrap();
    assert_eq!(read.check(&doc, true), Err(AuthError::ReadOnly));
    assert!(matches!(
        read.check(&DocName::parse("b").unwrap(), false),
        Err(AuthError::WrongDocument { .. })
    ));
}

#[test]
fn admin_key_compares_exactly() {
    assert!(key().is_admin("0123456789abcdef0123456789abcdef"));
    assert!(!key().is_admin("0123456789abcdef0123456789abcdeF"));
    assert!(!key().is_admin(""));
    assert_eq!(AuthKey::new(b"short".to_vec()).unwrap_err(), AuthError::KeyTooShort(5));
}

/// Signs any payload, as a backend with the key could.
fn sign(payload: &[u8]) -> String {
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
    let mut mac = key().mac();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(mac.finalize().into_bytes()))
}

fn with(claims: serde_json::Value) -> Result<Claims, AuthError> {
    verify(&key(), &sign(&serde_json::to_vec(&claims).unwrap()), NOW)
}

const NOW: u64 = 1_800_000_000;

/// What weft could not revoke is refused: an id too short or too long to
/// be revoked, a lifetime longer than revocations are kept (a revoked
/// 10-year token worked again once its revocation was forgotten).
#[test]
fn unrevocable_tokens_are_refused() {
    let ok = serde_json::json!({"doc": "*", "perm": "read", "exp": NOW + 60, "jti": "t"});
    assert!(with(ok.clone()).is_ok());
    let set = |k: &str, v: serde_json::Value| {
        let mut c = ok.clone();
        c[k] = v;
        with(c)
    };
    assert!(matches!(set("jti", "".into()), Err(AuthError::Malformed(_))));
    assert!(set("jti", "j".repeat(128).into()).is_ok());
    assert!(matches!(
        set("jti", "j".repeat(129).into()),
        Err(AuthError::Malformed(_))
    ));
    let year = MAX_TOKEN_TTL_SECS;
    assert!(set("exp", (NOW + year).into()).is_ok());
    assert_eq!(set("exp", (NOW + 10 * year).into()), Err(AuthError::LivesTooLong));
    assert_eq!(set("exp", u64::MAX.into()), Err(AuthError::LivesTooLong));
    // a lifetime is counted from iat (or nbf) when the token says it
    let mut old = ok.clone();
    old["iat"] = (NOW - year).into();
    old["exp"] = (NOW + 86_400).into();
    assert_eq!(with(old), Err(AuthError::LivesTooLong));
}

#[test]
fn nbf_and_iat_are_honoured() {
    let base = serde_json::json!({"doc": "*", "perm": "read", "exp": NOW + 600, "jti": "t"});
    let set = |k: &str, v: u64| {
        let mut c = base.clone();
        c[k] = v.into();
        with(c)
    };
    assert!(set("nbf", NOW - 10).is_ok());
    assert!(set("nbf", NOW + CLOCK_LEEWAY_SECS).is_ok(), "clock leeway");
    assert_eq!(set("nbf", NOW + 300), Err(AuthError::NotYetValid));
    assert_eq!(set("iat", NOW + 300), Err(AuthError::NotYetValid));
    assert!(set("iat", NOW - 10).is_ok());
    let mut float = base.clone();
    float["nbf"] = 1.5.into();
    assert!(matches!(with(float), Err(AuthError::Malformed(_))));
}

/// Any claim value at all: verify answers, never panics, and what it
/// accepts can be revoked and ends within a year.
mod arbitrary_claims {
    use super::*;
    use proptest::prelude::*;

    fn json_number() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<u64>().prop_map(Into::into),
            any::<i64>().prop_map(Into::into),
            (NOW - 100..NOW + 2 * MAX_TOKEN_TTL_SECS).prop_map(Into::into),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)),
            Just(serde_json::Value::String("1e30".into())),
            Just(serde_json::json!(18_446_744_073_709_551_616u128 as f64)),
        ]
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(Into::into),
            json_number(),
            r"\PC{0,140}".prop_map(Into::into),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(Into::into),
            Just(serde_json::json!({"nested": [1, "two"]})),
        ]
    }

    fn claim() -> impl Strategy<Value = Option<serde_json::Value>> {
        prop::option::weighted(0.9, json_value())
    }

    proptest! {
        #[test]
        fn verify_never_panics(
            doc in prop::option::weighted(0.9, prop_oneof![r"\PC{0,20}".prop_map(Into::into), json_value()]),
            perm in prop::option::weighted(0.9, prop_oneof![Just("read".into()), Just("write".into()), json_value()]),
            exp in prop::option::weighted(0.9, json_number()),
            jti in prop::option::weighted(0.9, prop_oneof![r"\PC{0,140}".prop_map(Into::into), json_value()]),
            nbf in claim(), iat in claim(), sub in claim(), name in claim(),
            garbage in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut claims = serde_json::Map::new();
            for (k, v) in [("doc", doc), ("perm", perm), ("exp", exp), ("jti", jti),
                           ("nbf", nbf), ("iat", iat), ("sub", sub), ("name", name)] {
                if let Some(v) = v {
                    claims.insert(k.into(), v);
                }
            }
            let payload = serde_json::to_vec(&claims).unwrap();
            if let Ok(c) = verify(&key(), &sign(&payload), NOW) {
                prop_assert!(!c.jti.is_empty() && c.jti.len() <= MAX_TOKEN_ID_BYTES);
                prop_assert!(c.exp > NOW && c.exp <= NOW + MAX_TOKEN_TTL_SECS + CLOCK_LEEWAY_SECS);
            }
            let _ = verify(&key(), &sign(&garbage), NOW);
            let _ = verify(&key(), &String::from_utf8_lossy(&garbage), NOW);
        }
    }
}

#[test]
fn ttls_parse() {
    assert_eq!(parse_ttl("90"), Ok(90));
    assert_eq!(parse_ttl("15m"), Ok(900));
    assert_eq!(parse_ttl("1h"), Ok(3600));
    assert_eq!(parse_ttl("7d"), Ok(604_800));
    assert!(parse_ttl("0s").is_err());
    assert!(parse_ttl("1y").is_err());
    assert!(parse_ttl("h").is_err());
}
