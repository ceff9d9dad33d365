//! Checkpoint keys in cloud KMSs (issue 22 §1). AWS KMS end to end against moto's KMS (an
//! ECDSA P-256 key: moto has no Ed25519 keys), and the Ed25519 path, the credential sources,
//! Azure Key Vault and every failure against recording servers on 127.0.0.1 that check the
//! documented request shapes and sign with local keys. Each signed log verifies in the
//! offline verifier with the key the KMS holds.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use auditlog_client::verify::{load_history, verify_dir};
use auditlog_engine::kms::aws::{AwsKmsSigner, AwsKmsSpec, KEY_SPEC_P256};
use auditlog_engine::kms::azure::{AzureEnv, AzureKeySigner, AzureKeySpec};
use auditlog_engine::kms::gcp::{GcpEnv, GcpKeySpec, GcpKmsSigner};
use auditlog_engine::{Engine, KmsError, Signer};
use auditlog_formats::keyhistory::KeyBackend;
use auditlog_formats::note::{self, VerifierKey, ALG_ECDSA_SHA256, ALG_ED25519};
use auditlog_tests::recording::{RecordingServer, Request};
use auditlog_tests::{event, small_config};
use auditlog_worm::aws_creds::AwsEnv;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{json, Value};

const NAME: &str = "auditlog.local/log";

fn env(vars: &[(&str, &str)]) -> AwsEnv {
    AwsEnv {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn static_env() -> AwsEnv {
    env(&[
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ])
}

fn aws_spec(endpoint: &str) -> AwsKmsSpec {
    AwsKmsSpec {
        region: "us-east-1".into(),
        key_id: "arn:aws:kms:us-east-1:123456789012:key/test".into(),
        endpoint: Some(endpoint.to_string()),
    }
}

/// Runs an engine signing with `signer`, appends `n` events, and checks the last checkpoint
/// and the whole directory with the offline verifier, holding only the verifier key.
fn sign_a_log_and_verify_offline(signer: Arc<dyn Signer>, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let key = signer.verifier_key();
    let engine = Engine::open(small_config(dir.path()), Some(signer)).expect("open");
    append(&engine, 0, n);
    let cp = engine
        .wait_checkpoint(n, Duration::from_secs(20))
        .expect("a checkpoint");
    note::open_checkpoint(&cp.note, std::slice::from_ref(&key)).expect("the note verifies");
    engine.shutdown().expect("shutdown");
    let summary = verify_dir(dir.path(), &key, &mut |_, _| {}).expect("offline verifier");
    assert_eq!(summary.events, n);
    dir
}

fn append(engine: &Engine, start: u64, n: u64) {
    let mut b = engine.new_batch(auditlog_engine::Submitter::token("test-writer"));
    for k in start..start + n {
        b.add(&event(k, 200)).expect("valid event");
    }
    engine.append(b).expect("append");
}

fn backend_in_history(dir: &std::path::Path) -> KeyBackend {
    let h = load_history(&dir.join("keys.json")).expect("history");
    h.history.keys[0].backend.clone()
}

// ---- AWS KMS: a recording server that plays KMS with a local Ed25519 key ----

fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
}

fn ed25519_spki(k: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let mut der = hex::decode("302a300506032b6570032100").expect("hex");
    der.extend_from_slice(k.verifying_key().as_bytes());
    der
}

/// KMS's JSON 1.1 answers for an Ed25519 key; `sign_ok` false makes Sign fail with 500.
fn fake_aws_kms(up: Arc<AtomicBool>) -> RecordingServer {
    let key = ed25519_key();
    RecordingServer::start(Arc::new(move |r: &Request| {
        let body = r.json();
        match r.header("x-amz-target") {
            Some("TrentService.GetPublicKey") => (
                200,
                json!({
                    "KeyId": body["KeyId"],
                    "KeySpec": "ECC_NIST_EDWARDS25519",
                    "KeyUsage": "SIGN_VERIFY",
                    "PublicKey": B64.encode(ed25519_spki(&key)),
                    "SigningAlgorithms": ["ED25519_SHA_512", "ED25519_PH_SHA_512"],
                })
                .to_string(),
            ),
            Some("TrentService.Sign") if !up.load(Ordering::SeqCst) => (
                500,
                json!({"__type": "KMSInternalException", "message": "the test took KMS down"})
                    .to_string(),
            ),
            Some("TrentService.Sign") => {
                let msg = B64
                    .decode(body["Message"].as_str().unwrap_or(""))
                    .expect("b64");
                (
                    200,
                    json!({
                        "KeyId": body["KeyId"],
                        "Signature": B64.encode(key.sign(&msg).to_bytes()),
                        "SigningAlgorithm": "ED25519_SHA_512",
                    })
                    .to_string(),
                )
            }
            _ => (
                400,
                json!({"__type": "UnknownOperationException"}).to_string(),
            ),
        }
    }))
}

#[test]
fn aws_kms_ed25519_request_shape_and_a_log_it_signs_verifies() {
    let kms = fake_aws_kms(Arc::new(AtomicBool::new(true)));
    let signer = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, static_env()).expect("open");
    let key = signer.verifier_key();
    assert_eq!(key.algorithm(), ALG_ED25519);
    assert_eq!(key.public_key(), ed25519_key().verifying_key().as_bytes());
    let dir = sign_a_log_and_verify_offline(Arc::new(signer), 100);
    assert_eq!(
        backend_in_history(dir.path()),
        KeyBackend::AwsKms {
            region: "us-east-1".into(),
            key_id: aws_spec("").key_id,
            endpoint: Some(kms.url()),
        }
    );
    let reqs = kms.requests();
    let sign = reqs
        .iter()
        .find(|r| r.header("x-amz-target") == Some("TrentService.Sign"))
        .expect("a Sign request");
    assert_eq!(sign.method, "POST");
    assert_eq!(sign.target, "/");
    assert_eq!(
        sign.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let auth = sign.header("authorization").expect("SigV4");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
            && auth.contains("/us-east-1/kms/aws4_request")
            && auth.contains("x-amz-target"),
        "{auth}"
    );
    let body = sign.json();
    assert_eq!(body["MessageType"], "RAW");
    assert_eq!(body["SigningAlgorithm"], "ED25519_SHA_512");
    assert_eq!(body["KeyId"], aws_spec("").key_id);
    let msg = B64
        .decode(body["Message"].as_str().expect("Message"))
        .expect("b64");
    assert!(
        String::from_utf8(msg)
            .expect("text")
            .starts_with("auditlog.local/log\n"),
        "the checkpoint text itself is sent, not a digest"
    );
}

/// A KMS that fails while running (`fail(true)`): ingest goes on, the engine's status
/// (what `/ready` and the metrics report) names the failure (`why` in it), and signing
/// recovers when the KMS is back (`fail(false)`). The one check every backend gets.
fn failing_while_running_stops_no_ingest(
    signer: Arc<dyn Signer>,
    fail: &dyn Fn(bool),
    why: &[&str],
) {
    let key = signer.verifier_key();
    let dir = tempfile::tempdir().expect("tmp");
    let engine = Engine::open(small_config(dir.path()), Some(signer)).expect("open");
    append(&engine, 0, 50);
    engine
        .wait_checkpoint(50, Duration::from_secs(20))
        .expect("checkpoint");
    fail(true);
    append(&engine, 50, 50);
    let mut said = String::new();
    auditlog_tests::wait_for("a signer error reported", 20, || {
        said = engine.status().signer_error.unwrap_or_default();
        !said.is_empty()
    });
    assert!(why.iter().all(|w| said.contains(w)), "{said}");
    assert_eq!(engine.tree_size(), 100, "ingest went on");
    fail(false);
    let cp = engine
        .wait_checkpoint(100, Duration::from_secs(30))
        .expect("signing recovers");
    note::open_checkpoint(&cp.note, &[key]).expect("verifies");
    engine.shutdown().expect("shutdown");
}

#[test]
fn aws_kms_failing_while_running_stops_no_ingest_and_recovers() {
    let up = Arc::new(AtomicBool::new(true));
    let kms = fake_aws_kms(up.clone());
    let signer = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, static_env()).expect("open");
    failing_while_running_stops_no_ingest(
        Arc::new(signer),
        &|f| up.store(!f, Ordering::SeqCst),
        &["AWS KMS", "KMSInternalException"],
    );
}

/// A KMS that answers with a signature by another key: nothing is published.
#[test]
fn a_kms_returning_a_wrong_signature_publishes_nothing() {
    let other = ed25519_dalek::SigningKey::from_bytes(&[6u8; 32]);
    let key = ed25519_key();
    let kms = RecordingServer::start(Arc::new(move |r: &Request| {
        let body = r.json();
        if r.header("x-amz-target") == Some("TrentService.GetPublicKey") {
            let v = json!({"KeySpec": "ECC_NIST_EDWARDS25519", "KeyUsage": "SIGN_VERIFY",
                           "PublicKey": B64.encode(ed25519_spki(&key))});
            return (200, v.to_string());
        }
        let msg = B64
            .decode(body["Message"].as_str().unwrap_or(""))
            .expect("b64");
        let v = json!({"Signature": B64.encode(other.sign(&msg).to_bytes()),
                       "SigningAlgorithm": "ED25519_SHA_512"});
        (200, v.to_string())
    }));
    let signer = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, static_env()).expect("open");
    let cp = auditlog_formats::note::Checkpoint {
        origin: NAME.into(),
        size: 1,
        root: [0u8; 32],
        extensions: vec![],
    };
    let e = auditlog_engine::signer::sign_checkpoint(&cp, &[&signer]).expect_err("refused");
    assert!(e.to_string().contains("does not verify"), "{e}");
}

#[test]
fn aws_kms_start_errors_name_what_failed() {
    let answer = |status: u16, v: Value| {
        RecordingServer::start(Arc::new(move |_: &Request| (status, v.to_string())))
    };
    let open = |url: &str, env: AwsEnv| AwsKmsSigner::open(aws_spec(url), NAME, env).err();
    let missing = answer(
        400,
        json!({"__type": "NotFoundException", "message": "Key 'x' does not exist"}),
    );
    assert!(matches!(
        open(&missing.url(), static_env()),
        Some(KmsError::KeyNotFound { .. })
    ));
    let denied = answer(
        400,
        json!({"__type": "AccessDeniedException", "message": "not authorized"}),
    );
    assert!(matches!(
        open(&denied.url(), static_env()),
        Some(KmsError::AccessDenied { .. })
    ));
    let rsa = answer(
        200,
        json!({"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY", "PublicKey": "AAAA"}),
    );
    let e = open(&rsa.url(), static_env()).expect("refused");
    assert!(
        matches!(&e, KmsError::UnsupportedKey { spec, .. } if spec == "RSA_2048"),
        "{e}"
    );
    let closed = auditlog_tests::daemon::free_port();
    let e = open(&format!("http://127.0.0.1:{closed}"), static_env()).expect("refused");
    assert!(matches!(e, KmsError::Unreachable { .. }), "{e}");
    let none = env(&[("AWS_EC2_METADATA_DISABLED", "true")]);
    let e = open(&missing.url(), none).expect("refused");
    assert!(matches!(e, KmsError::Credentials { .. }), "{e}");
    assert!(e.to_string().contains("AWS KMS key arn:aws:kms"), "{e}");
}

// ---- The AWS credential chain, each source against a local server ----

/// KMS that records which access key and session token signed each request.
fn kms_and_creds_seen() -> RecordingServer {
    fake_aws_kms(Arc::new(AtomicBool::new(true)))
}

fn assert_signed_with(kms: &RecordingServer, access_key: &str, token: &str) {
    let reqs = kms.requests();
    assert!(!reqs.is_empty());
    for r in reqs {
        let auth = r.header("authorization").expect("auth");
        assert!(
            auth.contains(&format!("Credential={access_key}/")),
            "{auth}"
        );
        assert_eq!(r.header("x-amz-security-token"), Some(token));
    }
}

fn expiry_in_an_hour() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    auditlog_worm::time::rfc3339(now + 3600)
}

#[test]
fn aws_credentials_from_a_web_identity_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "eyJ.k8s.token\n").expect("write");
    let exp = expiry_in_an_hour();
    let sts = RecordingServer::start(Arc::new(move |_: &Request| {
        let xml = format!(
            "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>websecret</SecretAccessKey><SessionToken>webtoken</SessionToken><Expiration>{exp}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
        );
        (200, xml)
    }));
    let kms = kms_and_creds_seen();
    let e = env(&[
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.to_str().expect("utf-8"),
        ),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/auditlog"),
        ("AWS_ENDPOINT_URL_STS", &sts.url()),
    ]);
    let signer = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, e).expect("open");
    for _ in 0..3 {
        signer.sign(b"text\n").expect("sign");
    }
    assert_signed_with(&kms, "ASIAWEB", "webtoken");
    let sts_reqs = sts.requests();
    assert_eq!(sts_reqs.len(), 1, "temporary credentials are cached");
    let form = sts_reqs[0].form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("Action"), Some("AssumeRoleWithWebIdentity"));
    assert_eq!(
        get("RoleArn"),
        Some("arn:aws:iam::123456789012:role/auditlog")
    );
    assert_eq!(get("WebIdentityToken"), Some("eyJ.k8s.token"));
    assert!(sts_reqs[0].header("authorization").is_none(), "unsigned");
}

#[test]
fn aws_credentials_from_the_container_endpoint() {
    let exp = expiry_in_an_hour();
    let ecs = RecordingServer::start(Arc::new(move |r: &Request| {
        if r.header("authorization") != Some("Bearer pod-identity") {
            return (401, "{}".into());
        }
        let v = json!({"AccessKeyId": "ASIAECS", "SecretAccessKey": "s", "Token": "ecstoken",
                       "Expiration": exp});
        (200, v.to_string())
    }));
    let kms = kms_and_creds_seen();
    let full = format!("{}/v2/credentials/abc", ecs.url());
    let e = env(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer pod-identity"),
    ]);
    let signer = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, e).expect("open");
    signer.sign(b"text\n").expect("sign");
    assert_signed_with(&kms, "ASIAECS", "ecstoken");
    assert_eq!(ecs.requests()[0].target, "/v2/credentials/abc");
    assert_eq!(ecs.requests().len(), 1);
}

#[test]
fn aws_credentials_from_imdsv2() {
    let exp = expiry_in_an_hour();
    let imds = RecordingServer::start(Arc::new(move |r: &Request| {
        match (r.method.as_str(), r.target.as_str()) {
            ("PUT", "/latest/api/token") => (200, "imds-session".into()),
            _ if r.header("x-aws-ec2-metadata-token") != Some("imds-session") => (401, "".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "auditlog-role".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/auditlog-role") => {
                let v = json!({"Code": "Success", "AccessKeyId": "ASIAEC2",
                               "SecretAccessKey": "s", "Token": "ec2token", "Expiration": exp});
                (200, v.to_string())
            }
            _ => (404, "".into()),
        }
    }));
    let kms = kms_and_creds_seen();
    let e = env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url())]);
    let signer = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, e).expect("open");
    signer.sign(b"text\n").expect("sign");
    assert_signed_with(&kms, "ASIAEC2", "ec2token");
    let put = &imds.requests()[0];
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(imds.requests().len(), 3, "cached after the first fetch");
}

// ---- AWS KMS against moto (tools tier) ----

fn moto_env() -> AwsEnv {
    env(&[
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ])
}

/// A P-256 signing key created in moto (`CreateKey`), and a signer opened on it.
fn moto_p256_key(moto: &auditlog_tests::worm_servers::Server) -> (String, AwsKmsSigner) {
    let endpoint = Some(moto.endpoint());
    let arn = AwsKmsSigner::create(
        "us-east-1",
        endpoint.clone(),
        KEY_SPEC_P256,
        "test",
        moto_env(),
    )
    .expect("CreateKey");
    let spec = AwsKmsSpec {
        region: "us-east-1".into(),
        key_id: arn.clone(),
        endpoint,
    };
    let signer = AwsKmsSigner::open(spec, NAME, moto_env()).expect("GetPublicKey");
    (arn, signer)
}

#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn aws_kms_p256_key_from_moto_signs_a_log_that_verifies_offline() {
    let moto = auditlog_tests::worm_servers::start_moto();
    let (arn, signer) = moto_p256_key(&moto);
    assert!(arn.starts_with("arn:aws:kms:us-east-1:"), "{arn}");
    let key = signer.verifier_key();
    assert_eq!(key.algorithm(), ALG_ECDSA_SHA256);
    // The printed verifier key is all an auditor needs.
    let printed = VerifierKey::parse(&key.to_string()).expect("parses");
    let dir = sign_a_log_and_verify_offline(Arc::new(signer), 300);
    verify_dir(dir.path(), &printed, &mut |_, _| {}).expect("with the printed key");
    assert!(matches!(
        backend_in_history(dir.path()),
        KeyBackend::AwsKms { key_id, .. } if key_id == arn
    ));
    let e2 = AwsKmsSigner::open(
        AwsKmsSpec {
            region: "us-east-1".into(),
            key_id: "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
                .into(),
            endpoint: Some(moto.endpoint()),
        },
        NAME,
        moto_env(),
    )
    .err()
    .expect("no such key");
    assert!(matches!(e2, KmsError::KeyNotFound { .. }), "{e2}");
}

// ---- Azure Key Vault: a recording vault and identity platform with a local P-256 key ----

fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).expect("scalar")
}

struct FakeAzure {
    login: RecordingServer,
    vault: RecordingServer,
    tokens: Arc<AtomicUsize>,
}

fn fake_azure() -> FakeAzure {
    fake_azure_with(Arc::new(AtomicBool::new(false)))
}

/// The fake vault, answering 503 to signing while `down`.
fn fake_azure_with(down: Arc<AtomicBool>) -> FakeAzure {
    let tokens = Arc::new(AtomicUsize::new(0));
    let issued = tokens.clone();
    let login = RecordingServer::start(Arc::new(move |_: &Request| {
        issued.fetch_add(1, Ordering::SeqCst);
        let v = json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "vault-token"});
        (200, v.to_string())
    }));
    let key = p256_key();
    let vault = RecordingServer::start(Arc::new(move |r: &Request| {
        if r.header("authorization") != Some("Bearer vault-token") {
            return (401, json!({"error": {"code": "Unauthorized"}}).to_string());
        }
        let point = key.verifying_key().to_sec1_point(false);
        let (x, y) = (&point.as_bytes()[1..33], &point.as_bytes()[33..]);
        match (r.method.as_str(), r.target.as_str()) {
            ("GET", "/keys/cp/v1?api-version=7.4") => {
                let v = json!({"key": {"kid": "https://v/keys/cp/v1", "kty": "EC-HSM",
                    "crv": "P-256", "x": B64URL.encode(x), "y": B64URL.encode(y),
                    "key_ops": ["sign", "verify"]}});
                (200, v.to_string())
            }
            ("POST", "/keys/cp/v1/sign?api-version=7.4") if down.load(Ordering::SeqCst) => (
                503,
                json!({"error": {"code": "ServiceUnavailable", "message": "try later"}})
                    .to_string(),
            ),
            ("POST", "/keys/cp/v1/sign?api-version=7.4") => {
                let body = r.json();
                assert_eq!(body["alg"], "ES256");
                let digest = B64URL
                    .decode(body["value"].as_str().expect("value"))
                    .expect("b64url");
                let sig: p256::ecdsa::Signature =
                    p256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(&key, &digest)
                        .expect("sign");
                let v =
                    json!({"kid": "https://v/keys/cp/v1", "value": B64URL.encode(sig.to_bytes())});
                (200, v.to_string())
            }
            _ => (
                404,
                json!({"error": {"code": "KeyNotFound", "message": "no such key"}}).to_string(),
            ),
        }
    }));
    FakeAzure {
        login,
        vault,
        tokens,
    }
}

fn azure_env(login: &RecordingServer) -> AzureEnv {
    AzureEnv {
        tenant_id: Some("tenant-1".into()),
        client_id: Some("client-1".into()),
        client_secret: Some("client-secret".into()),
        federated_token_file: None,
        authority_host: Some(login.url()),
    }
}

fn azure_spec(vault: &RecordingServer) -> AzureKeySpec {
    AzureKeySpec {
        vault: vault.url(),
        key: "cp".into(),
        version: "v1".into(),
    }
}

#[test]
fn azure_key_vault_es256_signs_a_log_that_verifies_offline() {
    let az = fake_azure();
    let signer =
        AzureKeySigner::open(azure_spec(&az.vault), NAME, azure_env(&az.login)).expect("open");
    let key = signer.verifier_key();
    assert_eq!(key.algorithm(), ALG_ECDSA_SHA256);
    let der = p256_key().verifying_key().to_public_key_der().expect("der");
    assert_eq!(key.public_key(), der.as_bytes());
    let dir = sign_a_log_and_verify_offline(Arc::new(signer), 100);
    assert!(matches!(
        backend_in_history(dir.path()),
        KeyBackend::AzureKeyVault { key, version, .. } if key == "cp" && version == "v1"
    ));
    assert_eq!(az.tokens.load(Ordering::SeqCst), 1, "the token is cached");
    let t = &az.login.requests()[0];
    assert_eq!(t.target, "/tenant-1/oauth2/v2.0/token");
    let form = t.form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("grant_type").as_deref(), Some("client_credentials"));
    assert_eq!(get("client_id").as_deref(), Some("client-1"));
    assert_eq!(get("client_secret").as_deref(), Some("client-secret"));
    assert_eq!(
        get("scope").as_deref(),
        Some("https://vault.azure.net/.default")
    );
    // The digest sent is SHA-256 of the checkpoint text.
    let sign = az
        .vault
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("a sign request");
    assert_eq!(sign.header("content-type"), Some("application/json"));
    assert_eq!(
        B64URL
            .decode(sign.json()["value"].as_str().expect("value"))
            .expect("b64url")
            .len(),
        32
    );
}

#[test]
fn azure_workload_identity_and_start_errors() {
    let az = fake_azure();
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("azure-token");
    std::fs::write(&token_file, "federated.jwt\n").expect("write");
    let mut e = azure_env(&az.login);
    e.client_secret = None;
    e.federated_token_file = Some(token_file.display().to_string());
    let signer = AzureKeySigner::open(azure_spec(&az.vault), NAME, e).expect("open");
    signer.sign(b"text\n").expect("sign");
    let form = az.login.requests()[0].form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("client_assertion").as_deref(), Some("federated.jwt"));
    assert_eq!(
        get("client_assertion_type").as_deref(),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(get("client_secret"), None);

    let mut missing = azure_spec(&az.vault);
    missing.version = "v2".into();
    let err = AzureKeySigner::open(missing, NAME, azure_env(&az.login))
        .err()
        .expect("refused");
    assert!(matches!(err, KmsError::KeyNotFound { .. }), "{err}");
    let mut no_identity = azure_env(&az.login);
    no_identity.client_secret = None;
    let err = AzureKeySigner::open(azure_spec(&az.vault), NAME, no_identity)
        .err()
        .expect("refused");
    assert!(matches!(err, KmsError::Credentials { .. }), "{err}");
}

// ---- Google Cloud KMS: a recording KMS and token endpoint with local keys ----

const KEY_VERSION: &str =
    "projects/p/locations/global/keyRings/r/cryptoKeys/checkpoints/cryptoKeyVersions/1";

/// A GCP KMS for an Ed25519 key; `bad_crc` makes it answer with a wrong `signatureCrc32c`.
fn fake_gcp_kms(bad_crc: Arc<AtomicBool>) -> RecordingServer {
    let key = ed25519_key();
    RecordingServer::start(Arc::new(move |r: &Request| {
        if r.header("authorization") != Some("Bearer gcp-token") {
            return (401, json!({"error": {"message": "no token"}}).to_string());
        }
        let public = format!("/v1/{KEY_VERSION}/publicKey");
        let sign = format!("/v1/{KEY_VERSION}:asymmetricSign");
        if r.method == "GET" && r.target == public {
            let pem = format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                B64.encode(ed25519_spki(&key))
            );
            let v = json!({"pem": pem, "algorithm": "EC_SIGN_ED25519",
                           "pemCrc32c": crc32c::crc32c(pem.as_bytes()).to_string(),
                           "name": KEY_VERSION});
            return (200, v.to_string());
        }
        if r.method == "POST" && r.target == sign {
            let body = r.json();
            let data = B64
                .decode(body["data"].as_str().expect("data"))
                .expect("b64");
            assert_eq!(
                body["dataCrc32c"].as_str(),
                Some(crc32c::crc32c(&data).to_string().as_str())
            );
            let sig = key.sign(&data).to_bytes();
            let mut crc = crc32c::crc32c(&sig);
            if bad_crc.load(Ordering::SeqCst) {
                crc ^= 1;
            }
            let v = json!({"signature": B64.encode(sig), "signatureCrc32c": crc.to_string(),
                           "verifiedDataCrc32c": true, "name": KEY_VERSION});
            return (200, v.to_string());
        }
        (404, json!({"error": {"message": "not found"}}).to_string())
    }))
}

fn openssl(args: &[&str]) {
    // Quiet: key generation draws progress dots on stderr.
    let st = std::process::Command::new("openssl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl {args:?}");
}

#[test]
fn gcp_kms_service_account_key_signs_a_log_that_verifies_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let pem = dir.path().join("sa.pem");
    let pub_der = dir.path().join("sa.pub.der");
    let p = |x: &std::path::Path| x.to_str().expect("utf-8").to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &p(&pem),
    ]);
    openssl(&[
        "rsa",
        "-in",
        &p(&pem),
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        &p(&pub_der),
    ]);
    let decoding = jsonwebtoken::DecodingKey::from_rsa_der(&std::fs::read(&pub_der).expect("read"));
    let token = RecordingServer::start(Arc::new(move |r: &Request| {
        let form = r.form();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            get("grant_type").as_deref(),
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        );
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.validate_aud = false;
        let claims =
            jsonwebtoken::decode::<Value>(&get("assertion").expect("assertion"), &decoding, &v)
                .expect("an RS256 assertion signed by the service account's key")
                .claims;
        assert_eq!(claims["iss"], "signer@p.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], "https://www.googleapis.com/auth/cloudkms");
        assert!(claims["aud"].as_str().expect("aud").ends_with("/token"));
        let v = json!({"access_token": "gcp-token", "expires_in": 3599, "token_type": "Bearer"});
        (200, v.to_string())
    }));
    let sa = dir.path().join("sa.json");
    let sa_json = json!({
        "type": "service_account",
        "client_email": "signer@p.iam.gserviceaccount.com",
        "private_key_id": "k1",
        "private_key": std::fs::read_to_string(&pem).expect("pem"),
        "token_uri": format!("{}/token", token.url()),
    });
    std::fs::write(&sa, sa_json.to_string()).expect("write");
    let kms = fake_gcp_kms(Arc::new(AtomicBool::new(false)));
    let spec = GcpKeySpec {
        key_version: KEY_VERSION.into(),
        endpoint: Some(kms.url()),
    };
    let genv = GcpEnv {
        credentials_file: Some(p(&sa)),
        metadata_host: None,
    };
    let signer = GcpKmsSigner::open(spec, NAME, genv).expect("open");
    assert_eq!(signer.verifier_key().algorithm(), ALG_ED25519);
    let log = sign_a_log_and_verify_offline(Arc::new(signer), 100);
    assert!(matches!(
        backend_in_history(log.path()),
        KeyBackend::GcpKms { key_version, .. } if key_version == KEY_VERSION
    ));
    assert_eq!(token.requests().len(), 1, "the token is cached");
}

#[test]
fn gcp_kms_metadata_server_token_and_a_bad_crc_is_refused() {
    let meta = RecordingServer::start(Arc::new(|r: &Request| {
        if r.header("metadata-flavor") != Some("Google") {
            return (403, "".into());
        }
        assert_eq!(
            r.target,
            "/computeMetadata/v1/instance/service-accounts/default/token"
        );
        let v = json!({"access_token": "gcp-token", "expires_in": 3599, "token_type": "Bearer"});
        (200, v.to_string())
    }));
    let bad_crc = Arc::new(AtomicBool::new(false));
    let kms = fake_gcp_kms(bad_crc.clone());
    let genv = GcpEnv {
        credentials_file: None,
        metadata_host: Some(format!("127.0.0.1:{}", meta.port)),
    };
    let spec = GcpKeySpec {
        key_version: KEY_VERSION.into(),
        endpoint: Some(kms.url()),
    };
    let signer = GcpKmsSigner::open(spec.clone(), NAME, genv.clone()).expect("open");
    let sig = signer.sign(b"text\n").expect("sign");
    assert!(signer.verifier_key().verify(b"text\n", &sig));
    bad_crc.store(true, Ordering::SeqCst);
    let e = signer
        .sign(b"text\n")
        .expect_err("a damaged signature is refused");
    assert!(e.to_string().contains("signatureCrc32c"), "{e}");
    let mut missing = spec;
    missing.key_version.push('9');
    let e = GcpKmsSigner::open(missing, NAME, genv)
        .err()
        .expect("refused");
    assert!(matches!(e, KmsError::KeyNotFound { .. }), "{e}");
}

// ---- The daemon: `keys generate --aws-kms` and a rotation across backends (tools tier) ----

const AWS_TEST_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A daemon's directory and configuration beside a moto server whose endpoint the
/// two-person rule allows (`[admin]` gets `admin_extra` too); the daemon runs with
/// [`AWS_TEST_ENV`].
struct MotoLog {
    moto: auditlog_tests::worm_servers::Server,
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl MotoLog {
    fn new(admin_extra: &str) -> MotoLog {
        let moto = auditlog_tests::worm_servers::start_moto();
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        let config = dir.path().join("auditlogd.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n[admin]\napprovals_required = 1\n{admin_extra}kms_endpoints_allowed = [\"{}\"]\n",
                auditlog_tests::daemon::CONFIG,
                moto.endpoint()
            ),
        )
        .expect("config");
        MotoLog {
            moto,
            dir,
            data,
            config,
        }
    }

    fn start(&self) -> auditlog_tests::daemon::Daemon {
        let mut launch = auditlog_tests::daemon::Daemon::launch(self.dir.path())
            .config_file(&self.config)
            .data_dir(&self.data);
        for (k, v) in AWS_TEST_ENV {
            launch = launch.env(k, v);
        }
        launch.start()
    }
}

/// A log started on a key file rotates to a P-256 key that `auditlogd keys generate
/// --aws-kms` created in moto, under the two-person rule (one admin requests, another
/// approves); both keys sign in the overlap, the KMS key alone after the file key's
/// retirement, and the offline verifier accepts both eras with the key history.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn rotation_from_a_key_file_to_aws_kms_verifies_end_to_end() {
    use auditlog_client::verify::verify_dir_with_history;
    use auditlog_tests::daemon::daemon_command;

    let log = MotoLog::new("");
    let (moto, data, config) = (&log.moto, &log.data, &log.config);
    let cli = |args: &[&str]| {
        let mut c = daemon_command();
        c.arg("--config").arg(config).arg("--data-dir").arg(data);
        for (k, v) in AWS_TEST_ENV {
            c.env(k, v);
        }
        let out = c.args(args).output().expect("run auditlogd");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let printed = cli(&[
        "keys",
        "generate",
        "--aws-kms",
        "--key-spec",
        "p256",
        "--endpoint",
        &moto.endpoint(),
    ]);
    let mut lines = printed.lines();
    let b_key: VerifierKey = lines.next().expect("key").parse().expect("verifier key");
    assert_eq!(b_key.algorithm(), ALG_ECDSA_SHA256);
    let backend: Value = serde_json::from_str(
        lines
            .next()
            .and_then(|l| l.strip_prefix("backend: "))
            .expect("backend line"),
    )
    .expect("backend json");
    assert_eq!(backend["type"], "aws_kms");
    let bob = cli(&["tokens", "add", "--role", "admin", "--name", "bob"])
        .trim()
        .to_string();

    let mut d = log.start();
    let alice = d.token("admin");
    let (a_key, _, _) = d.log();
    assert_eq!(
        a_key.algorithm(),
        ALG_ED25519,
        "the log starts on its key file"
    );
    let events = |from: u64| (from..from + 10).map(|i| event(i, 200)).collect::<Vec<_>>();
    d.post_events(&events(0));
    d.checkpoint(d.tree_size(), &a_key);

    let request = |token: &str, body: Value| {
        let r = d.call(
            "POST",
            "/v1/admin/requests",
            Some(token),
            Some(("application/json", body.to_string().as_bytes())),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().expect("id").to_string()
    };
    let approve = |id: &str, token: &str| {
        let r = d.call(
            "POST",
            &format!("/v1/admin/requests/{id}/approve"),
            Some(token),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["state"], "executed");
    };
    // An endpoint nobody allowlisted would be sent the daemon's signed requests: refused.
    for bad in [
        json!({"type": "aws_kms", "region": "us-east-1", "key_id": "k", "endpoint": "http://127.0.0.1:9"}),
        json!({"type": "azure_key_vault", "vault": "https://vault.azure.net.evil.example", "key": "k", "version": "1"}),
    ] {
        let body = json!({"op": "rotate_key", "backend": bad}).to_string();
        let r = d.call(
            "POST",
            "/v1/admin/requests",
            Some(&alice),
            Some(("application/json", body.as_bytes())),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "kms_endpoint_not_allowed");
    }
    let id = request(&alice, json!({"op": "rotate_key", "backend": backend}));
    approve(&id, &bob);
    d.post_events(&events(10));
    let r = d.get(
        &format!("/v1/checkpoint?min_size={}&wait_ms=10000", d.tree_size()),
        "auditor",
    );
    let (_, opened) =
        note::open_checkpoint(&r.text(), &[a_key.clone(), b_key.clone()]).expect("opens");
    assert_eq!(
        opened.verified,
        vec![a_key.clone(), b_key.clone()],
        "both sign"
    );

    let id = request(&bob, json!({"op": "retire_key", "key": a_key.to_string()}));
    approve(&id, &alice);
    d.post_events(&events(20));
    let cp = d.checkpoint(d.tree_size(), &b_key);
    let total = d.tree_size();
    assert!(cp.size <= total);
    d.stop();

    let hist = load_history(&data.join("keys.json")).expect("history");
    assert!(matches!(
        &hist.history.keys[1].backend,
        KeyBackend::AwsKms { .. }
    ));
    let s = verify_dir_with_history(data, &hist, &mut |_, _| {}).expect("both eras verify");
    assert_eq!(s.events, total);
}

/// An approved rotation policy whose backend is AWS KMS (issue 22 §2 across backends): a log
/// on a key file whose key is past `rotation_days` gets its next key created in moto's KMS
/// (P-256) by the scheduler, added, and signing beside the old one; a policy naming an
/// endpoint nobody allowlisted is refused.
#[test]
#[cfg_attr(
    not(feature = "tools"),
    ignore = "tools tier, needs moto: ./scripts/test"
)]
fn a_rotation_policy_makes_the_next_key_in_aws_kms() {
    use auditlog_tests::daemon::{add_token, age_keys};

    let log = MotoLog::new("rotation_check_interval_ms = 100\n");
    let (moto, data) = (&log.moto, &log.data);
    let bob = add_token(data, "admin", "bob");
    let mut d = log.start();
    let (old, _, _) = d.log();
    d.stop();
    age_keys(data, 30);
    let d = log.start();
    let alice = d.token("admin");
    let request = |body: Value| {
        d.call(
            "POST",
            "/v1/admin/requests",
            Some(&alice),
            Some(("application/json", body.to_string().as_bytes())),
        )
    };
    let policy = |endpoint: String| {
        json!({"op": "set_rotation_policy", "rotation": {"rotation_days": 20, "backend":
            {"type": "aws_kms", "region": "us-east-1", "endpoint": endpoint, "key_spec": "p256"}}})
    };
    let r = request(policy("http://127.0.0.1:9".into()));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "kms_endpoint_not_allowed");
    let r = request(policy(moto.endpoint()));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    let r = d.call(
        "POST",
        &format!("/v1/admin/requests/{id}/approve"),
        Some(&bob),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["state"], "executed", "{}", r.text());

    let history = || {
        load_history(&data.join("keys.json"))
            .expect("history")
            .history
    };
    auditlog_tests::wait_for("the key made in AWS KMS", 30, || history().keys.len() == 2);
    let h = history();
    assert!(
        matches!(&h.keys[1].backend, KeyBackend::AwsKms { region, endpoint: Some(e), .. }
            if region == "us-east-1" && *e == moto.endpoint()),
        "{:?}",
        h.keys[1].backend
    );
    let new: VerifierKey = h.keys[1].verifier_key.parse().expect("key");
    assert_eq!(new.algorithm(), ALG_ECDSA_SHA256);
    let size = d.tree_size();
    d.post_events(&[event(size, 100)]);
    let r = d.get(
        &format!("/v1/checkpoint?min_size={}&wait_ms=10000", size + 1),
        "auditor",
    );
    let (_, opened) = note::open_checkpoint(&r.text(), &[old.clone(), new.clone()]).expect("opens");
    assert_eq!(opened.verified, vec![old, new], "both sign in the overlap");
}

#[test]
fn azure_key_vault_failing_while_running_stops_no_ingest_and_recovers() {
    let down = Arc::new(AtomicBool::new(false));
    let az = fake_azure_with(down.clone());
    let signer =
        AzureKeySigner::open(azure_spec(&az.vault), NAME, azure_env(&az.login)).expect("open");
    failing_while_running_stops_no_ingest(
        Arc::new(signer),
        &|f| down.store(f, Ordering::SeqCst),
        &["Azure", "503"],
    );
}

#[test]
fn gcp_kms_failing_while_running_stops_no_ingest_and_recovers() {
    let meta = RecordingServer::start(Arc::new(|_: &Request| {
        let v = json!({"access_token": "gcp-token", "expires_in": 3599, "token_type": "Bearer"});
        (200, v.to_string())
    }));
    let bad_crc = Arc::new(AtomicBool::new(false));
    let kms = fake_gcp_kms(bad_crc.clone());
    let genv = GcpEnv {
        credentials_file: None,
        metadata_host: Some(format!("127.0.0.1:{}", meta.port)),
    };
    let spec = GcpKeySpec {
        key_version: KEY_VERSION.into(),
        endpoint: Some(kms.url()),
    };
    let signer = GcpKmsSigner::open(spec, NAME, genv).expect("open");
    // Damaged in transit while running: every signature is refused until it is whole again.
    failing_while_running_stops_no_ingest(
        Arc::new(signer),
        &|f| bad_crc.store(f, Ordering::SeqCst),
        &["signatureCrc32c"],
    );
}

// ---- Numbers (docs/benchmarks.md): run with --ignored --nocapture ----

/// Signing latency per backend against the local servers (median and 99th percentile of
/// `n` checkpoints, each signed and verified by `sign_checkpoint` as the daemon does), and
/// the signing thread's CPU per checkpoint (`RUSAGE_THREAD`: the daemon's cost, not the
/// fake server's), which at one checkpoint a second is that fraction of a core.
#[test]
#[ignore = "numbers: cargo test -p auditlog-tests --features tools --test kms -- --ignored --nocapture"]
fn kms_signing_latency_and_cpu() {
    let n = 1000;
    let measure = |label: &str, signer: &dyn Signer| {
        let mut lat = Vec::with_capacity(n);
        let thread_cpu_us = || {
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: getrusage writes the struct it is given.
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
            let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
            t(ru.ru_utime) + t(ru.ru_stime)
        };
        let cpu0 = thread_cpu_us();
        for i in 0..n {
            let cp = auditlog_formats::note::Checkpoint {
                origin: NAME.into(),
                size: i as u64 + 1,
                root: [i as u8; 32],
                extensions: vec![],
            };
            let t = std::time::Instant::now();
            auditlog_engine::signer::sign_checkpoint(&cp, &[signer]).expect("sign");
            lat.push(t.elapsed().as_micros() as u64);
        }
        let cpu_us = (thread_cpu_us() - cpu0) as f64 / n as f64;
        lat.sort_unstable();
        println!(
            "{label:<28} median {:>6} us  p99 {:>6} us  cpu {:>7.1} us/checkpoint ({:.4}% of a core at 1/s)",
            lat[n / 2],
            lat[n * 99 / 100],
            cpu_us,
            cpu_us / 10_000.0
        );
    };
    let file = auditlog_engine::KeyFileSigner::load_or_create(
        &tempfile::tempdir().expect("tmp").path().join("k"),
        NAME,
    )
    .expect("key file");
    measure("key file (Ed25519)", &file);
    let kms = fake_aws_kms(Arc::new(AtomicBool::new(true)));
    let aws = AwsKmsSigner::open(aws_spec(&kms.url()), NAME, static_env()).expect("open");
    measure("AWS KMS Ed25519 (recording)", &aws);
    let gcp_kms = fake_gcp_kms(Arc::new(AtomicBool::new(false)));
    let meta = RecordingServer::start(Arc::new(|_: &Request| {
        (
            200,
            json!({"access_token": "gcp-token", "expires_in": 3599}).to_string(),
        )
    }));
    let gcp = GcpKmsSigner::open(
        GcpKeySpec {
            key_version: KEY_VERSION.into(),
            endpoint: Some(gcp_kms.url()),
        },
        NAME,
        GcpEnv {
            credentials_file: None,
            metadata_host: Some(format!("127.0.0.1:{}", meta.port)),
        },
    )
    .expect("open");
    measure("Google Cloud KMS (recording)", &gcp);
    let az = fake_azure();
    let azure =
        AzureKeySigner::open(azure_spec(&az.vault), NAME, azure_env(&az.login)).expect("open");
    measure("Azure Key Vault P-256 (rec.)", &azure);
    if auditlog_tests::tools::which("moto_server").is_some() {
        let moto = auditlog_tests::worm_servers::start_moto();
        let (_, moto_signer) = moto_p256_key(&moto);
        measure("AWS KMS P-256 (moto)", &moto_signer);
    }
}

// ---- The daemon with `[signer] backend = "aws_kms"` against the recording KMS ----

/// A daemon signing in (recording) AWS KMS: its start fails with a line naming the KMS, the
/// key and the cause when KMS cannot be reached or the key is missing; while running, a
/// KMS outage stops no ingest, `/ready` answers 503 naming it and the metrics count it,
/// and signing resumes when KMS is back.
#[test]
fn daemon_on_aws_kms_start_errors_and_an_outage_while_running() {
    use auditlog_tests::daemon::{Daemon, CONFIG};

    let up = Arc::new(AtomicBool::new(true));
    let kms = fake_aws_kms(up.clone());
    let dir = tempfile::tempdir().expect("tmp");
    let signer = |endpoint: &str| {
        format!(
            "{CONFIG}\n[signer]\nbackend = \"aws_kms\"\nregion = \"us-east-1\"\nkey_id = \"alias/checkpoints\"\nendpoint = \"{endpoint}\"\n"
        )
    };
    let launch = |config: String| {
        let mut l = Daemon::launch(dir.path()).config(&config);
        for (k, v) in AWS_TEST_ENV {
            l = l.env(k, v);
        }
        l
    };
    let closed = format!("http://127.0.0.1:{}", auditlog_tests::daemon::free_port());
    let out = launch(signer(&closed))
        .command()
        .output()
        .expect("run auditlogd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AWS KMS key alias/checkpoints: GetPublicKey: cannot reach the KMS"),
        "{stderr}"
    );
    let missing = RecordingServer::start(Arc::new(|_: &Request| {
        let v = json!({"__type": "NotFoundException", "message": "Alias is not found."});
        (400, v.to_string())
    }));
    let out = launch(signer(&missing.url()))
        .command()
        .output()
        .expect("run auditlogd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("AWS KMS key alias/checkpoints: not found"),
        "{stderr}"
    );

    let mut d = launch(signer(&kms.url())).start();
    let (key, _, _) = d.log();
    assert_eq!(key.public_key(), ed25519_key().verifying_key().as_bytes());
    let events = |from: u64| (from..from + 10).map(|i| event(i, 200)).collect::<Vec<_>>();
    d.post_events(&events(0));
    d.checkpoint(d.tree_size(), &key);
    up.store(false, Ordering::SeqCst);
    d.post_events(&events(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = d.call("GET", "/ready", None, None);
        if r.status == 503 && String::from_utf8_lossy(&r.body).contains("AWS KMS") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready never named the KMS"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.metric("auditlog_signer_error"), Some(1));
    d.post_events(&events(20));
    up.store(true, Ordering::SeqCst);
    d.checkpoint(d.tree_size(), &key);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.call("GET", "/ready", None, None).status != 200 {
        assert!(std::time::Instant::now() < deadline, "/ready stayed 503");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    verify_dir(&dir.path().join("data"), &key, &mut |_, _| {}).expect("offline verifier");
}
