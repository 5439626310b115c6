//! A real rsyslog for the SIEM tests (started here with its own config and
//! work directory on 127.0.0.1, TLS or RELP input, what it received written
//! one line per message with the raw message and its parsed structured
//! data), and the rcgen
//! certificates it and the agents use. Shared by `siem` and `bundles`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::util::*;

// ---- certificates ----

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) for `names`, signed by `ca`; `expired` puts
/// its validity in the past.
fn leaf(
    ca: &Ca,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "relstat test");
    params.extended_key_usages = vec![usage];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Files under `dir`: ca.pem, server.pem/.key (localhost, 127.0.0.1),
/// expired.pem/.key, client.pem/.key, and other-ca.pem (an unrelated CA).
pub fn write_certs(dir: &Path) {
    let ca = new_ca("relstat test CA");
    let other = new_ca("someone else");
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("other-ca.pem"), &other.pem).unwrap();
    for (name, usage, expired) in [
        ("server", ExtendedKeyUsagePurpose::ServerAuth, false),
        ("expired", ExtendedKeyUsagePurpose::ServerAuth, true),
        ("client", ExtendedKeyUsagePurpose::ClientAuth, false),
    ] {
        let (c, k) = leaf(&ca, &["localhost", "127.0.0.1"], usage, expired);
        std::fs::write(dir.join(format!("{name}.pem")), c).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), k).unwrap();
    }
}

// ---- rsyslog ----

#[derive(Clone, Copy, PartialEq)]
pub enum Input {
    /// RFC 5425; `cert` names the server certificate files; `mtls` requires a client certificate.
    Tls {
        cert: &'static str,
        mtls: bool,
    },
    Relp {
        tls: bool,
    },
}

pub struct Rsyslog {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    pub child: Option<Child>,
    /// Partial last lines left in received.log by a kill -9 mid-write
    /// (omfile writes a large batch in several calls); [`Rsyslog::lines`]
    /// leaves them out. Whatever they held arrives again whole, since the
    /// killed rsyslog never acknowledged it.
    pub torn: Vec<String>,
}

impl Rsyslog {
    /// `durable`: the ruleset runs in the input's thread (a Direct queue), so
    /// a message is written to received.log (and flushed, one message a
    /// transaction) before imrelp acknowledges it or imtcp reads the next:
    /// what rsyslog acknowledged survives its own kill -9. (With a disk
    /// queue synced at every message, the receiver-crash tests twice ended
    /// with 1,999 of 2,000 messages on a loaded machine; our reading is
    /// that rsyslog dequeues a message before its actions finish, so a kill
    /// -9 in between loses it on rsyslog's side.) Only the receiver-crash
    /// tests need it.
    /// A plain TLS input (server certificate, no client certificate) with
    /// fresh test certificates in a temporary directory, returned with it.
    pub fn tls(bin: PathBuf) -> (tempfile::TempDir, Rsyslog) {
        let certs = tempfile::tempdir().unwrap();
        write_certs(certs.path());
        let rs = Rsyslog::new(
            bin,
            certs.path(),
            Input::Tls {
                cert: "server",
                mtls: false,
            },
            false,
        );
        (certs, rs)
    }

    pub fn new(bin: PathBuf, dir: &Path, input: Input, durable: bool) -> Rsyslog {
        let port = free_port();
        let d = dir.display();
        std::fs::create_dir_all(dir.join("work")).unwrap();
        let input_conf = match input {
            Input::Tls { cert, mtls } => format!(
                "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
                 DefaultNetstreamDriverCertFile=\"{d}/{cert}.pem\" DefaultNetstreamDriverKeyFile=\"{d}/{cert}.key\")\n\
                 module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"{auth}\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\" \
                 SupportOctetCountedFraming=\"on\" gnutlsPriorityString=\"NORMAL\")\n",
                auth = if mtls { "x509/certvalid" } else { "anon" }
            ),
            Input::Relp { tls } => {
                let tls = if tls {
                    format!(
                        " tls=\"on\" tls.caCert=\"{d}/ca.pem\" tls.myCert=\"{d}/server.pem\" \
                         tls.myPrivKey=\"{d}/server.key\" tls.authMode=\"certvalid\""
                    )
                } else {
                    String::new()
                };
                format!(
                    "module(load=\"imrelp\")\n\
                     input(type=\"imrelp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"in\"{tls})\n"
                )
            }
        };
        let queue = if durable {
            "queue.type=\"Direct\""
        } else {
            "queue.type=\"LinkedList\""
        };
        let conf = format!(
            "global(workDirectory=\"{d}/work\")\n{input_conf}\
             module(load=\"mmpstrucdata\")\n\
             template(name=\"line\" type=\"string\" \
             string=\"%msgid%\\t%hostname%\\t%app-name%\\t%timestamp:::date-rfc3339%\\t%rawmsg%\\t%$!%\\n\")\n\
             ruleset(name=\"in\" {queue}) {{\n\
               action(type=\"mmpstrucdata\")\n\
               action(type=\"omfile\" file=\"{d}/received.log\" template=\"line\")\n\
             }}\n"
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            bin,
            dir: dir.to_path_buf(),
            port,
            child: None,
            torn: Vec::new(),
        };
        r.start();
        r
    }

    pub fn start(&mut self) {
        let child = Command::new(&self.bin)
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("rsyslog.err")).unwrap())
            .spawn()
            .expect("rsyslogd starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(15, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "rsyslog did not listen on {port}"
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            // End a torn last line so the restarted rsyslog starts a new one.
            let path = self.dir.join("received.log");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                use std::io::Write;
                let tail = text.rsplit('\n').next().unwrap_or_default();
                eprintln!("rsyslog was killed mid-line: {tail:?}");
                self.torn.push(tail.to_string());
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                f.write_all(b"\n").unwrap();
            }
        }
    }

    /// The complete lines of received.log: a last line without its newline
    /// is one rsyslog is still writing (omfile may write a message in
    /// several calls), read again whole at the next look.
    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !self.torn.iter().any(|t| t == l))
            .map(String::from)
            .collect()
    }

    /// The structured data rsyslog parsed, per received message.
    pub fn received(&self) -> Vec<BTreeMap<String, String>> {
        self.lines()
            .iter()
            .map(|l| {
                let json = l.rsplit('\t').next().unwrap();
                let v: serde_json::Value = serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("rsyslog output {l:?}: {e}"));
                let sd = &v["rfc5424-sd"]["relstat@32473"];
                sd.as_object()
                    .unwrap_or_else(|| panic!("no relstat@32473 structured data in {l:?}"))
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .collect()
    }

    /// Releases received, in arrival order.
    pub fn releases(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .map(|m| m["release"].clone())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One rsyslog test at a time: they measure delivery times and rates, and
/// seven receivers with synced disk queues on a 2-core machine starve each
/// other.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn rsyslogd() -> Option<(PathBuf, std::sync::MutexGuard<'static, ()>)> {
    let bin = peer("rsyslogd")?;
    Some((bin, SERIAL.lock().unwrap_or_else(|p| p.into_inner())))
}
