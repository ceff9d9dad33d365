//! Conditional writes, what a writer's lease is renewed with (issue 19 §3): `get_tagged` and
//! `put_if` against each store: a local directory, moto's S3 (`If-Match` / `If-None-Match:
//! *` on PutObject), Azurite (the same on Put Blob) and the recording GCS server
//! (`ifGenerationMatch`). Part of the `worm` test binary.

use std::sync::Barrier;

use auditlog_tests::s3_options;
use auditlog_tests::worm_servers::*;
use auditlog_worm::{SwapOutcome, Tagged, TargetOptions, WormTarget};

fn stored(what: &str, o: SwapOutcome) -> String {
    match o {
        SwapOutcome::Stored { tag } => tag,
        SwapOutcome::Conflict => panic!("{what}: conflict, expected stored"),
    }
}

/// The contract, on `key` (absent at the start) and `key` + `.absent`: returns the tags of
/// the create and of the swap.
fn conditional_writes_hold(t: &dyn WormTarget, key: &str) -> (String, String) {
    assert_eq!(t.get_tagged(key).expect("get absent"), None);
    let t1 = stored("create", t.put_if(key, b"lease v1", None).expect("create"));
    assert_eq!(
        t.put_if(key, b"lease v1 again", None)
            .expect("create again"),
        SwapOutcome::Conflict,
        "a create finds the key taken"
    );
    assert_eq!(
        t.get_tagged(key).expect("get"),
        Some(Tagged {
            bytes: b"lease v1".to_vec(),
            tag: t1.clone()
        }),
        "get_tagged answers the create's bytes and tag"
    );
    let t2 = stored("swap", t.put_if(key, b"lease v2", Some(&t1)).expect("swap"));
    assert_ne!(t2, t1, "a write gives a new tag");
    assert_eq!(
        t.put_if(key, b"lease v3", Some(&t1)).expect("stale swap"),
        SwapOutcome::Conflict,
        "a swap from a tag that is no longer current"
    );
    assert_eq!(
        t.get_tagged(key).expect("get"),
        Some(Tagged {
            bytes: b"lease v2".to_vec(),
            tag: t2.clone()
        }),
        "the refused swap left the object alone"
    );
    let absent = format!("{key}.absent");
    assert_eq!(
        t.put_if(&absent, b"x", Some(&t2))
            .expect("swap of an absent key"),
        SwapOutcome::Conflict
    );
    assert_eq!(t.get_tagged(&absent).expect("get"), None);
    (t1, t2)
}

/// `threads` writers read the tag, wait for each other, then swap from it at once, `rounds`
/// times: exactly one stores each round, and the object holds its bytes.
fn racing_swaps_store_once(t: &dyn WormTarget, key: &str, threads: usize, rounds: usize) {
    if t.get_tagged(key).expect("get").is_none() {
        t.put_if(key, b"start", None).expect("create");
    }
    for round in 0..rounds {
        let start = Barrier::new(threads);
        let outcomes: Vec<(String, SwapOutcome)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|i| {
                    let start = &start;
                    s.spawn(move || {
                        let tag = t.get_tagged(key).expect("get").expect("there").tag;
                        let mine = format!("round {round} writer {i}");
                        start.wait();
                        let out = t.put_if(key, mine.as_bytes(), Some(&tag)).expect("put_if");
                        (mine, out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        let won: Vec<&(String, SwapOutcome)> = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, SwapOutcome::Stored { .. }))
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
        let now = t.get_tagged(key).expect("get").expect("there");
        assert_eq!(now.bytes, won[0].0.as_bytes(), "round {round}");
        assert_eq!(SwapOutcome::Stored { tag: now.tag }, won[0].1);
    }
}

#[test]
fn local_conditional_writes_and_a_race() {
    let d = tempfile::tempdir().expect("tmp");
    let t = auditlog_worm::open(
        &format!("file://{}", d.path().display()),
        &Default::default(),
    )
    .expect("target");
    let (t1, _) = conditional_writes_hold(t.as_ref(), "lease/writer");
    assert_eq!(t1, blake3::hash(b"lease v1").to_hex().to_string());
    racing_swaps_store_once(t.as_ref(), "lease/race", 8, 20);
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn s3_conditional_writes_on_an_object_lock_bucket() {
    let moto = start_moto();
    let proxy = RecordingProxy::start(moto.port);
    let opts = s3_options(&format!("http://127.0.0.1:{}", proxy.port));
    auditlog_worm::create_bucket("s3://locked", &opts, true).expect("bucket with lock");
    let t = auditlog_worm::open("s3://locked/log", &opts).expect("target");
    let (t1, t2) = conditional_writes_hold(t.as_ref(), "lease");
    // The ETag as S3 sends it, quotes and all: the MD5 of the bytes.
    let md5 = |b: &[u8]| format!("\"{}\"", hex::encode(auditlog_worm::content_md5(b)));
    assert_eq!(
        (t1.as_str(), t2.as_str()),
        (md5(b"lease v1").as_str(), md5(b"lease v2").as_str())
    );

    let puts = proxy.requests("PUT /locked/log/lease");
    let header =
        |h: &Vec<(String, String)>, k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let shapes: Vec<(Option<String>, Option<String>, bool)> = puts
        .iter()
        .map(|h| {
            (
                header(h, "if-none-match"),
                header(h, "if-match"),
                header(h, "content-md5").is_some(),
            )
        })
        .collect();
    let (star, m1, m2) = (Some("*".to_string()), Some(t1.clone()), Some(t2.clone()));
    assert_eq!(
        shapes,
        vec![
            (star.clone(), None, true), // create
            (star, None, true),         // create again
            (None, m1.clone(), true),   // swap
            (None, m1, true),           // stale swap
            (None, m2, true),           // swap of the absent key
        ],
        "{puts:?}"
    );
    // A tag that is no tag never reaches the store: moto takes an empty If-Match as no
    // condition at all and overwrites.
    for bad in ["", "*", "\"a\"\r\nx-amz-meta-x: y"] {
        assert!(t.put_if("lease", b"x", Some(bad)).is_err(), "{bad:?}");
    }
    assert_eq!(proxy.requests("PUT /locked/log/lease").len(), puts.len());
    assert_eq!(
        t.get("lease").expect("get").as_deref(),
        Some(&b"lease v2"[..])
    );
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs Azurite: ./scripts/test"
)]
fn azure_conditional_writes_and_a_race() {
    let store = tempfile::tempdir().expect("tmp");
    let azurite = start_azurite(store.path());
    let proxy = RecordingProxy::start(azurite.port);
    let opts = |port: u16| TargetOptions {
        endpoint: Some(format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")),
        account: Some(AZURITE_ACCOUNT.into()),
        account_key: Some(AZURITE_KEY.into()),
        connect_timeout_ms: Some(500),
        request_timeout_ms: Some(5000),
        ..Default::default()
    };
    auditlog_worm::create_bucket("azure://audit", &opts(azurite.port), false).expect("container");
    let t = auditlog_worm::open("azure://audit/log", &opts(proxy.port)).expect("target");
    let (t1, t2) = conditional_writes_hold(t.as_ref(), "lease");
    assert!(
        t1.starts_with('"') && t1.ends_with('"'),
        "ETag as sent: {t1}"
    );
    let puts = proxy.requests(&format!("PUT /{AZURITE_ACCOUNT}/audit/log/lease"));
    let header =
        |h: &Vec<(String, String)>, k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let conditions: Vec<(Option<String>, Option<String>)> = puts
        .iter()
        .map(|h| (header(h, "if-none-match"), header(h, "if-match")))
        .collect();
    let star = Some("*".to_string());
    assert_eq!(
        conditions,
        vec![
            (star.clone(), None),
            (star, None),
            (None, Some(t1.clone())),
            (None, Some(t1)),
            (None, Some(t2)),
        ],
        "{puts:?}"
    );
    for bad in ["", "*"] {
        assert!(t.put_if("lease", b"x", Some(bad)).is_err(), "{bad:?}");
    }
    assert_eq!(
        proxy
            .requests(&format!("PUT /{AZURITE_ACCOUNT}/audit/log/lease"))
            .len(),
        puts.len()
    );
    // Azurite checks the condition and stores the blob in one step of its event loop.
    let direct = auditlog_worm::open("azure://audit/log", &opts(azurite.port)).expect("target");
    racing_swaps_store_once(direct.as_ref(), "race", 8, 10);
}

#[test]
fn gcs_conditional_writes_send_if_generation_match() {
    let gcs = FakeGcs::start();
    let opts = TargetOptions {
        endpoint: Some(format!("http://127.0.0.1:{}", gcs.port)),
        bearer_token: Some("t".into()),
        ..Default::default()
    };
    let t = auditlog_worm::open("gs://bkt/log", &opts).expect("target");
    let (t1, t2) = conditional_writes_hold(t.as_ref(), "lease");
    assert_eq!((t1.as_str(), t2.as_str()), ("1", "2"), "the generations");
    let queries = gcs.upload_queries.lock().expect("lock").clone();
    let condition = |q: &String| {
        q.split('&')
            .find_map(|p| p.strip_prefix("ifGenerationMatch="))
            .map(str::to_string)
    };
    assert_eq!(
        queries.iter().map(condition).collect::<Vec<_>>(),
        ["0", "0", "1", "1", "2"].map(|g| Some(g.to_string())),
        "{queries:?}"
    );
    for up in gcs.uploads.lock().expect("lock").iter() {
        assert!(
            up.get("retention").is_none(),
            "a lease has no retention: {up}"
        );
    }
    // A tag that is not a generation is never sent: no unconditional upload slips through.
    assert!(t.put_if("lease", b"x", Some("\"0x8D\"")).is_err());
    assert!(t.put_if("lease", b"x", Some("")).is_err());
    assert_eq!(
        gcs.upload_queries.lock().expect("lock").len(),
        queries.len()
    );
    assert_eq!(
        t.get("lease").expect("get").as_deref(),
        Some(&b"lease v2"[..])
    );
}
