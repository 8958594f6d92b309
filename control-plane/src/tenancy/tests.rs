//! The tenancy policy, one promise per test.

use super::*;

fn policy(toml_text: &str) -> (Policy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config: TenancyConfig = toml::from_str(toml_text).unwrap();
    (Policy::new(config, dir.path()).unwrap(), dir)
}

fn bindings(specs: &[&str]) -> Vec<Binding> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

fn admit(p: &Policy, tenant: &str, spec: &str) -> Result<Binding, PolicyError> {
    p.admit(tenant, bindings(&[spec]), &[])
        .map(|mut b| b.remove(0))
}

const SHARED: &str = r#"
memory_max_mb = 16
[backends.cache]
provider = "redis"
options = { url = "redis://10.0.0.5:6379", password = "operator-secret" }
default = true
[backends.acme-only]
provider = "redis"
options = { url = "redis://10.0.0.6:6379" }
tenants = ["acme"]
[backends.main]
provider = "dynamo"
options = { table = "stratus-kv", region = "us-east-1" }
default = true
[endpoints.redis]
hosts = ["10.9.0.0/16"]
"#;

#[test]
fn tenants_bind_backends_by_name_and_workers_get_their_options() {
    let (p, _d) = policy(SHARED);
    let stored = admit(&p, "acme", "kv=redis").unwrap();
    assert_eq!(stored.to_string(), "kv=redis");
    let resolved = p.resolve("acme", &stored.to_string()).unwrap();
    assert_eq!(
        resolved,
        "kv=redis:password=operator-secret,url=redis://10.0.0.5:6379"
    );
    let named = admit(&p, "acme", "kv.c=redis:backend=acme-only").unwrap();
    assert!(
        p.resolve("acme", &named.to_string())
            .unwrap()
            .contains("10.0.0.6")
    );
    // Not offered to another tenant, at bind time or (if revoked later) at feed time.
    assert!(admit(&p, "globex", "kv=redis:backend=acme-only").is_err());
    assert!(p.resolve("globex", &named.to_string()).is_err());
    assert_eq!(
        p.resolve_for_worker("globex", "app", &named.to_string()),
        "kv.c=redis:backend=!refused"
    );
    // The backend decides the table and endpoint; a tenant cannot add options.
    for bad in [
        "kv=dynamo:table=someone-elses",
        "kv=redis:backend=cache,url=redis://10.0.0.5:6379",
        "kv=dynamo:backend=cache",
        "kv=redis:backend=nope",
    ] {
        assert!(admit(&p, "acme", bad).is_err(), "{bad}");
    }
}

#[test]
fn own_endpoints_only_where_the_operator_allows() {
    let (p, _d) = policy(SHARED);
    assert!(admit(&p, "acme", "kv=redis:url=redis://10.9.1.1:6379").is_ok());
    for bad in [
        "kv=redis:url=redis://10.0.0.5:6379",
        "kv=redis:url=redis://169.254.169.254:80",
        "kv=redis:url=unix:///var/run/docker.sock",
        "kv=redis:url=redis://127.0.0.1:6379",
        "kv=dynamo:endpoint=https://attacker.example,access_key_id=a,secret_access_key=b",
    ] {
        let refused = admit(&p, "acme", bad).unwrap_err().to_string();
        assert!(!refused.is_empty(), "{bad}");
    }
}

#[test]
fn an_own_dynamo_endpoint_needs_its_own_credentials() {
    let (p, _d) = policy(
        r#"
[endpoints.dynamo]
hosts = ["dynamo.acme.example"]
"#,
    );
    let refused = admit(&p, "acme", "kv=dynamo:endpoint=https://dynamo.acme.example")
        .unwrap_err()
        .to_string();
    assert!(refused.contains("credentials"), "{refused}");
    let ok = admit(
        &p,
        "acme",
        "kv=dynamo:endpoint=https://dynamo.acme.example,access_key_id=AK,secret_access_key=SK",
    )
    .unwrap();
    assert!(!ok.to_string().contains("SK"));
    assert!(
        p.resolve("acme", &ok.to_string())
            .unwrap()
            .contains("secret_access_key=SK")
    );
}

#[test]
fn secrets_are_sealed_shown_redacted_and_kept_when_sent_back_redacted() {
    let (p, _d) = policy("direct_bindings = true");
    let stored = admit(&p, "local", "kv=redis:url=redis://u:hunter2@h:6379").unwrap();
    let text = stored.to_string();
    assert!(
        !text.contains("hunter2") && text.contains("enc:v1:"),
        "{text}"
    );
    assert_eq!(shown(&text), "kv=redis:password=***,url=redis://u@h:6379");
    assert_eq!(
        p.resolve("local", &text).unwrap(),
        "kv=redis:password=hunter2,url=redis://u@h:6379"
    );
    // Sent back as read: the stored secret stays.
    let again = p
        .admit("local", bindings(&[&shown(&text)]), &[stored])
        .unwrap();
    assert_eq!(
        p.resolve("local", &again[0].to_string()).unwrap(),
        "kv=redis:password=hunter2,url=redis://u@h:6379"
    );
    // Redacted with nothing stored, or a sealed value pasted in: refused.
    assert!(admit(&p, "local", "kv=redis:password=***").is_err());
    assert!(admit(&p, "local", &format!("kv=redis:password={}", "enc:v1:AAAA")).is_err());
}

#[test]
fn memory_stores_are_capped_and_embedded_stores_take_no_path() {
    let (p, _d) = policy(SHARED);
    assert!(admit(&p, "acme", "kv=memory:max_mb=16").is_ok());
    assert!(admit(&p, "acme", "kv=memory:max_mb=1048576").is_err());
    let stored = admit(&p, "acme", "kv=memory").unwrap();
    assert_eq!(
        p.resolve("acme", &stored.to_string()).unwrap(),
        "kv=memory:max_mb=16"
    );
    assert!(admit(&p, "acme", "kv=embedded:path=/etc/passwd").is_err());
    assert!(admit(&p, "acme", "kv=embedded").is_ok());
}

#[test]
fn without_backends_a_shared_platform_refuses_bare_providers() {
    let (p, _d) = policy("");
    let refused = admit(&p, "acme", "kv=redis").unwrap_err().to_string();
    assert!(refused.contains("[tenancy.backends]"), "{refused}");
    let (direct, _d) = policy("direct_bindings = true");
    assert!(admit(&direct, "local", "kv=redis").is_ok());
    assert!(admit(&direct, "local", "kv=redis:url=redis://127.0.0.1:6379").is_ok());
}

#[test]
fn bad_tenancy_configs_are_refused() {
    for bad in [
        "[backends.x]\nprovider = \"memory\"",
        "[backends.x]\nprovider = \"redis\"\noptions = { colour = \"blue\" }",
        "[backends.a]\nprovider = \"redis\"\ndefault = true\n[backends.b]\nprovider = \"redis\"\ndefault = true",
        "[endpoints.etcd]\nhosts = []",
        "memory_max_mb = 0",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config: TenancyConfig = toml::from_str(bad).unwrap();
        assert!(Policy::new(config, dir.path()).is_err(), "{bad}");
    }
}

#[test]
fn a_kept_secret_never_moves_to_another_endpoint() {
    let (p, _d) = policy("direct_bindings = true");
    let stored = admit(&p, "local", "kv=redis:url=redis://h1:6379,password=s3cret").unwrap();
    let current = [stored];
    // Same endpoint: kept.
    assert!(
        p.admit(
            "local",
            bindings(&["kv=redis:url=redis://h1:6379,password=***"]),
            &current
        )
        .is_ok()
    );
    // Another endpoint, another provider: refused.
    for moved in [
        "kv=redis:url=redis://h2:6379,password=***",
        "kv=dynamo:endpoint=http://h1,access_key_id=a,secret_access_key=***",
    ] {
        let refused = p.admit("local", bindings(&[moved]), &current).unwrap_err();
        assert!(refused.to_string().contains("send the value"), "{refused}");
    }
}

#[test]
fn url_passwords_are_decoded_like_a_client_would_and_ambiguous_ones_refused() {
    let (p, _d) = policy("direct_bindings = true");
    let stored = admit(&p, "local", "kv=redis:url=redis://u:p%40ss@h:6379").unwrap();
    assert_eq!(
        p.resolve("local", &stored.to_string()).unwrap(),
        "kv=redis:password=p@ss,url=redis://u@h:6379"
    );
    // An empty password is no password.
    let stored = admit(&p, "local", "kv=redis:url=redis://u:@h:6379").unwrap();
    assert_eq!(stored.to_string(), "kv=redis:url=redis://u@h:6379");
    // `***` in the URL keeps the stored password, as `password=***` does.
    let first = admit(&p, "local", "kv=redis:url=redis://u:pw@h:6379").unwrap();
    let again = p
        .admit(
            "local",
            bindings(&["kv=redis:url=redis://u:***@h:6379"]),
            &[first],
        )
        .unwrap();
    assert!(
        p.resolve("local", &again[0].to_string())
            .unwrap()
            .contains("password=pw")
    );
    for bad in [
        "kv=redis:url=redis://u:a/b@h:6379",
        "kv=redis:url=redis://u:a@b@h:6379",
    ] {
        assert!(admit(&p, "local", bad).is_err(), "{bad}");
    }
}

#[test]
fn stored_bindings_are_checked_again_when_a_worker_gets_them() {
    let (open, dir) = policy(
        r#"
[endpoints.redis]
hosts = ["10.9.0.0/16"]
"#,
    );
    let stored = admit(&open, "acme", "kv=redis:url=redis://10.9.1.1:6379")
        .unwrap()
        .to_string();
    // The operator narrows the allow-list; the same key still opens the secrets.
    let narrowed: TenancyConfig = toml::from_str("[endpoints.redis]\nhosts = []").unwrap();
    let narrowed = Policy::new(narrowed, dir.path()).unwrap();
    assert!(narrowed.resolve("acme", &stored).is_err());
    let sent = narrowed.resolve_for_worker("acme", "app", &stored);
    assert_eq!(sent, "kv=redis:backend=!refused");
    let worker_sees = KvProvider::parse(&sent["kv=".len()..].parse().unwrap()).unwrap_err();
    assert!(worker_sees.to_string().contains("policy"), "{worker_sees}");
    // Nor does a bare provider fall back to the worker's own localhost.
    let (shared, _d) = policy("");
    assert!(shared.resolve("acme", "kv=redis").is_err());
}

#[test]
fn replicas_with_another_secrets_key_are_refused() {
    let (a, _da) = policy("");
    let (b, _db) = policy("");
    let check = a.key_check().unwrap();
    assert!(a.verify_key_check(&check).is_ok());
    assert!(b.verify_key_check(&check).is_err());
}

#[test]
fn backend_options_must_survive_the_binding_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let config: TenancyConfig = toml::from_str(
        "[backends.x]\nprovider = \"redis\"\noptions = { url = \"redis://h\", password = \"a,b\" }",
    )
    .unwrap();
    assert!(Policy::new(config, dir.path()).is_err());
}

#[test]
fn secrets_by_reference_only_for_one_trusted_user() {
    let (shared, _d) = policy("[endpoints.redis]\nhosts = [\"127.0.0.1\"]\nports = [6379]");
    let err = admit(
        &shared,
        "acme",
        "kv=redis:url=redis://127.0.0.1:6379,password_env=PW",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("worker's own environment"), "{err}");
    let (direct, _d) = policy("direct_bindings = true");
    assert!(
        admit(
            &direct,
            "acme",
            "kv=redis:url=redis://127.0.0.1:6379,password_env=PW"
        )
        .is_ok()
    );
    assert!(
        admit(&direct, "acme", "kv=redis:password=a,password_env=PW").is_err(),
        "a secret and a reference to it"
    );
}
