//! The exporter-toolkit web config (`[http] web_config_file`) on arbitrary
//! text: every bad file is an error that names it, never a panic.
//! Run with `cargo fuzz run -s none web_config` from fuzz/.
//!
//! Relative file names (`cert_file: server.pem`...) are read from
//! `tests/fixtures/web-config/`, which holds a CA, a server certificate
//! and its key, so the TLS checks run on real PEM too.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static PATH: LazyLock<PathBuf> = LazyLock::new(|| {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/web-config/fuzz.yml")
});

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = relstat::http::check_web_config_text(text, &PATH);
    }
});
