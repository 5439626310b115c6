//! The bundle reader (`relstat spool inspect`: manifest, signature, payload
//! checked against the manifest) on arbitrary files: it must refuse with a
//! [`BundleError`](relstat::spool::bundle::BundleError), never panic.
//! Run with `cargo fuzz run -s none bundle_reader` from fuzz/.
//!
//! The first byte picks how the rest becomes a bundle file, so that the
//! mutations reach past gzip's and tar's checksums:
//! - bit 0: check the signature against `tests/fixtures/bundle/dc-a.pub`
//!   (the key that signed the fixture bundle), or not at all;
//! - bits 1-2: 0 the file as is (gzip), 1 a tar that the target gzips,
//!   2 and 3 the three entries (manifest, signature, payload, split at
//!   [`SPLIT`]) that the target packs into a tar and gzips.
#![no_main]

use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;
use relstat::spool::bundle::inspect_file;

/// Separates the three entries in modes 2 and 3.
const SPLIT: &[u8] = b"\n--8<--\n";

static KEYS: LazyLock<PathBuf> =
    LazyLock::new(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bundle"));

/// One unlinked file (in memory on /dev/shm), rewritten for each input.
static FILE: LazyLock<Mutex<File>> = LazyLock::new(|| {
    let dir = Path::new("/dev/shm");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("relstat-fuzz-bundle-{}", std::process::id()));
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("scratch file");
    std::fs::remove_file(&path).expect("unlink scratch file");
    Mutex::new(f)
});

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).expect("gzip to memory");
    gz.finish().expect("gzip to memory")
}

/// A ustar archive of `entries` (name, bytes), as an export writes it.
fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).expect("tar to memory");
    }
    b.into_inner().expect("tar to memory")
}

fn split3(data: &[u8]) -> [&[u8]; 3] {
    let mut parts = [&data[..0]; 3];
    let mut rest = data;
    for part in parts.iter_mut().take(2) {
        match rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
            Some(i) => {
                *part = &rest[..i];
                rest = &rest[i + SPLIT.len()..];
            }
            None => {
                *part = rest;
                rest = &rest[rest.len()..];
            }
        }
    }
    parts[2] = rest;
    parts
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match (mode >> 1) & 3 {
        0 => rest.to_vec(),
        1 => gzip(rest),
        _ => {
            let [manifest, sig, payload] = split3(rest);
            gzip(&tar(&[
                ("manifest.json", manifest),
                ("manifest.sig", sig),
                ("events.ndjson", payload),
            ]))
        }
    };
    let keys = (mode & 1 == 1).then(|| KEYS.as_path());
    let mut f = FILE.lock().unwrap();
    f.set_len(0).unwrap();
    f.rewind().unwrap();
    f.write_all(&bytes).unwrap();
    f.rewind().unwrap();
    let _ = inspect_file(&f, Path::new("fuzz.bundle"), keys);
});
