//! The Calls client trusts roots compiled into the binary, not the system store: reading and
//! parsing the store cost outbound-call about 3 ms of CPU at every cold start (bench/README.md).
//! One test per binary: it points the system store at an empty directory for the whole process.

use std::time::Duration;

use twilio_voice::calls::{CallsClient, DEFAULT_API_BASE_URL, HttpTimeouts, RetryPolicy};

#[test]
fn the_calls_client_is_built_without_a_system_trust_store() {
    let empty = std::env::temp_dir().join(format!("calls-tls-no-roots-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    // SAFETY: the only test in this binary, and it sets the variables before anything else runs
    // (no other thread reads the environment). rustls-native-certs, which a system-store
    // verifier uses, reads exactly these two and finds no certificate.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", empty.join("none.pem"));
        std::env::set_var("SSL_CERT_DIR", &empty);
    }
    let built = CallsClient::new(
        DEFAULT_API_BASE_URL,
        HttpTimeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_secs(2),
        },
        RetryPolicy::default(),
    );
    std::fs::remove_dir_all(&empty).unwrap();
    if let Err(e) = built {
        panic!("building the Calls client needed the system trust store: {e:?}");
    }
}
