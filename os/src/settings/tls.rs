//! The TLS flags and config keys (`--tls-cert`, `--tls-key`, `--tls-client-ca`,
//! `--tls-client-auth`, `--tls-handshake-timeout`), resolved against the listeners into one
//! TLS config per TCP listener that serves TLS (`crate::tls` reads the files).
//!
//! One scheme for one listener or several: a file given as `NAME=FILE` is for the listener
//! named NAME (`--listen NAME=ADDR`); a bare FILE is for every listener no `NAME=` entry
//! names. The config file takes the same strings, one or a list (`tls_cert = "a.pem"` or
//! `tls_cert = ["api=a.pem", "admin=b.pem"]`); a flag replaces the file's key.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::file::{usage, FileConfig, UsageError};
use super::listen::{ListenAddr, ListenSpec};
use crate::tls::{ClientAuth, ListenerTls, TlsFiles};

/// Flags of the embedded runtime's TLS.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Serve TLS with this PEM certificate chain (embedded servers only), repeatable:
    /// `NAME=FILE` for the listener named NAME, FILE for every other TCP listener.
    #[arg(long = "tls-cert", value_name = "[NAME=]FILE")]
    pub tls_cert: Vec<String>,
    /// The PEM private key of --tls-cert, named the same way.
    #[arg(long = "tls-key", value_name = "[NAME=]FILE")]
    pub tls_key: Vec<String>,
    /// Verify client certificates against these PEM CA certificates, named the same way.
    #[arg(long = "tls-client-ca", value_name = "[NAME=]FILE")]
    pub tls_client_ca: Vec<String>,
    /// With --tls-client-ca: `required` (default: no certificate, no connection) or
    /// `optional` (a client may present none).
    #[arg(long = "tls-client-auth", value_name = "WHEN")]
    pub tls_client_auth: Option<String>,
    /// Close a connection whose TLS handshake is not done within SECS (default 10).
    #[arg(long = "tls-handshake-timeout", value_name = "SECS")]
    pub tls_handshake_timeout: Option<String>,
    /// The ALPN protocols offered, set by the program (`Server::tls_alpn`), not a flag.
    #[arg(skip)]
    pub alpn: Option<Vec<Vec<u8>>>,
}

/// The handshake timeout when none is given.
pub const HANDSHAKE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// The TLS of every listener, resolved and read.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// (listener name, its TLS), for each listener that serves TLS.
    pub listeners: Vec<(String, ListenerTls)>,
    pub client_auth: ClientAuth,
    pub handshake_timeout: Duration,
    pub alpn: Vec<Vec<u8>>,
}

impl Default for TlsSettings {
    fn default() -> TlsSettings {
        TlsSettings {
            listeners: Vec::new(),
            client_auth: ClientAuth::Required,
            handshake_timeout: HANDSHAKE_TIMEOUT_DEFAULT,
            alpn: Vec::new(),
        }
    }
}

/// `NAME=FILE` or `FILE`: (the name, if the part before `=` is one, and the file).
fn split_named(text: &str) -> (Option<&str>, &str) {
    match text.split_once('=') {
        Some((name, file))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            (Some(name), file)
        }
        _ => (None, text),
    }
}

/// A flag's entries, or the file's key (a string or a list of strings) without the flag.
fn entries(flag: &[String], file: &FileConfig, key: &str) -> Result<Vec<String>, UsageError> {
    if !flag.is_empty() {
        return Ok(flag.to_vec());
    }
    match file.shell.get(key) {
        None => Ok(Vec::new()),
        Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
        Some(_) => file.strings(key).map(Option::unwrap_or_default).map_err(|_| {
            usage(format!(
                "config file: `{key}` must be a file name or a list of them (`NAME=FILE` for one listener)"
            ))
        }),
    }
}

/// Each listener's file from one flag's entries, checked: one entry per name, names that
/// are listeners, no TLS on a unix listener.
fn per_listener(
    flag: &str,
    entries: &[String],
    listen: &[ListenSpec],
) -> Result<Vec<Option<PathBuf>>, UsageError> {
    let mut out: Vec<Option<PathBuf>> = vec![None; listen.len()];
    let mut named = vec![false; listen.len()];
    let mut everyone: Option<&str> = None;
    for text in entries {
        let (name, file) = split_named(text);
        if file.is_empty() {
            return Err(usage(format!("{flag} '{text}': the file name is empty")));
        }
        let Some(name) = name else {
            if everyone.is_some() {
                return Err(usage(format!(
                    "{flag} is given twice without a listener name; give it once, or once per listener as NAME=FILE"
                )));
            }
            everyone = Some(file);
            continue;
        };
        let Some(i) = listen.iter().position(|l| l.name == name) else {
            let names: Vec<&str> = listen.iter().map(|l| l.name.as_str()).collect();
            return Err(usage(format!(
                "{flag} {text}: no listener is named `{name}` (the listeners: {}; name one with --listen NAME=ADDR, or write ./{text} for a file whose name has a `=`)",
                names.join(", ")
            )));
        };
        if named[i] {
            return Err(usage(format!("{flag} names listener `{name}` twice")));
        }
        if matches!(listen[i].addr, ListenAddr::Unix(_)) {
            return Err(usage(format!(
                "{flag} {text}: --listen {} is a unix socket; TLS is served on TCP listeners only",
                listen[i].text
            )));
        }
        named[i] = true;
        out[i] = Some(PathBuf::from(file));
    }
    if let Some(file) = everyone {
        for (i, l) in listen.iter().enumerate().filter(|&(i, _)| !named[i]) {
            if matches!(l.addr, ListenAddr::Unix(_)) {
                return Err(usage(format!(
                    "{flag} {file} is for every listener, and --listen {} is a unix socket, which TLS is not served on: give it per TCP listener as {flag} NAME=FILE (with --listen NAME=ADDR)",
                    l.text
                )));
            }
            out[i] = Some(PathBuf::from(file));
        }
        if listen.is_empty() {
            return Err(usage(format!(
                "{flag} {file}: there is no listener to serve TLS on; add --listen"
            )));
        }
    }
    Ok(out)
}

impl TlsSettings {
    /// The TLS flags over the file's keys, resolved against `listen`, the files read.
    /// `embedded`: the workers are the embedded runtime (only it can serve TLS).
    pub fn resolve(
        args: &TlsArgs,
        file: &FileConfig,
        listen: &[ListenSpec],
        embedded: bool,
    ) -> Result<TlsSettings, UsageError> {
        let certs = entries(&args.tls_cert, file, "tls_cert")?;
        let keys = entries(&args.tls_key, file, "tls_key")?;
        let cas = entries(&args.tls_client_ca, file, "tls_client_ca")?;
        let auth_text = match &args.tls_client_auth {
            Some(t) => Some(t.clone()),
            None => file.string("tls_client_auth")?,
        };
        let timeout = match &args.tls_handshake_timeout {
            Some(t) => Some(t.trim().parse::<f64>().map_err(|_| t.clone())),
            None => match file.shell.get("tls_handshake_timeout") {
                None => None,
                Some(toml::Value::Integer(n)) => Some(Ok(*n as f64)),
                Some(toml::Value::Float(f)) => Some(Ok(*f)),
                Some(v) => Some(Err(v.to_string())),
            },
        };
        let given = [
            (!certs.is_empty(), "--tls-cert"),
            (!keys.is_empty(), "--tls-key"),
            (!cas.is_empty(), "--tls-client-ca"),
            (auth_text.is_some(), "--tls-client-auth"),
            (timeout.is_some(), "--tls-handshake-timeout"),
        ];
        if let Some((_, flag)) = given.iter().find(|(on, _)| *on).filter(|_| !embedded) {
            return Err(usage(format!(
                "{flag}: TLS is served by drover's embedded runtime only (`Server::run`); workers that accept connections themselves (a command's, or a program's own server under `Server::serve`) cannot be wrapped by drover: serve TLS in the program (tokio-rustls, say), or in a proxy in front of it"
            )));
        }
        let client_auth = match auth_text.as_deref() {
            None | Some("required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some(other) => {
                return Err(usage(format!(
                    "invalid --tls-client-auth '{other}' (config key `tls_client_auth`): `required` or `optional`"
                )))
            }
        };
        if auth_text.is_some() && cas.is_empty() {
            return Err(usage(
                "--tls-client-auth needs --tls-client-ca (the CA the client certificates are verified against)",
            ));
        }
        let handshake_timeout = match timeout {
            None => HANDSHAKE_TIMEOUT_DEFAULT,
            Some(Ok(secs)) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => {
                Duration::from_secs_f64(secs)
            }
            Some(Ok(secs)) => return Err(bad_timeout(&secs.to_string())),
            Some(Err(text)) => return Err(bad_timeout(&text)),
        };
        let cert = per_listener("--tls-cert", &certs, listen)?;
        let key = per_listener("--tls-key", &keys, listen)?;
        let ca = per_listener("--tls-client-ca", &cas, listen)?;
        let alpn = args.alpn.clone().unwrap_or_else(|| {
            crate::tls::ALPN_DEFAULT
                .iter()
                .map(|p| p.to_vec())
                .collect()
        });
        let mut settings = TlsSettings {
            listeners: Vec::new(),
            client_auth,
            handshake_timeout,
            alpn,
        };
        for (i, l) in listen.iter().enumerate() {
            let files = match (&cert[i], &key[i]) {
                (None, None) => {
                    if ca[i].is_some() {
                        return Err(usage(format!(
                            "--tls-client-ca is given for listener `{}`, which serves no TLS: give it --tls-cert and --tls-key too",
                            l.name
                        )));
                    }
                    continue;
                }
                (Some(_), None) => {
                    return Err(usage(format!(
                        "--tls-cert is given for listener `{}` without its --tls-key",
                        l.name
                    )))
                }
                (None, Some(_)) => {
                    return Err(usage(format!(
                        "--tls-key is given for listener `{}` without its --tls-cert",
                        l.name
                    )))
                }
                (Some(cert), Some(key)) => TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: ca[i].clone(),
                },
            };
            let loaded = crate::tls::load(&files, client_auth, &settings.alpn).map_err(usage)?;
            settings.listeners.push((l.name.clone(), loaded));
        }
        Ok(settings)
    }

    /// The same files read again (a rolling restart): the new configs, or why not.
    pub fn reread(&self) -> Result<TlsSettings, String> {
        let mut fresh = self.clone();
        for (_, l) in fresh.listeners.iter_mut() {
            *l = crate::tls::load(&l.files, self.client_auth, &self.alpn)?;
        }
        Ok(fresh)
    }

    /// A digest of what shapes a worker's TLS (the files' contents, the options).
    pub fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for (name, l) in &self.listeners {
            name.hash(&mut h);
            l.files.hash(&mut h);
            l.digest.hash(&mut h);
        }
        self.client_auth.hash(&mut h);
        self.handshake_timeout.hash(&mut h);
        self.alpn.hash(&mut h);
        h.finish()
    }

    /// What a forked worker needs.
    pub fn for_workers(&self) -> crate::tls::WorkerTls {
        crate::tls::WorkerTls {
            by_listener: self
                .listeners
                .iter()
                .map(|(name, l)| (name.clone(), Arc::clone(&l.config)))
                .collect(),
            handshake_timeout: self.handshake_timeout,
        }
    }
}

fn bad_timeout(text: &str) -> UsageError {
    usage(format!(
        "invalid --tls-handshake-timeout '{text}' (config key `tls_handshake_timeout`): a number of seconds above 0, at most 86400"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(name: &str) -> ListenSpec {
        ListenSpec {
            name: name.into(),
            addr: ListenAddr::Tcp("127.0.0.1:1".parse().unwrap()),
            text: format!("{name}=127.0.0.1:1"),
        }
    }

    fn unix(name: &str) -> ListenSpec {
        ListenSpec {
            name: name.into(),
            addr: ListenAddr::Unix("/tmp/x.sock".into()),
            text: format!("{name}=unix:/tmp/x.sock"),
        }
    }

    #[test]
    fn names_select_listeners_and_a_bare_file_covers_the_rest() {
        let listen = [tcp("api"), tcp("admin"), tcp("other")];
        let got = per_listener(
            "--tls-cert",
            &["admin=b.pem".into(), "a.pem".into()],
            &listen,
        )
        .unwrap();
        assert_eq!(
            got,
            [
                Some("a.pem".into()),
                Some("b.pem".into()),
                Some("a.pem".into())
            ]
        );
        assert_eq!(split_named("/etc/a=b.pem"), (None, "/etc/a=b.pem"));
    }

    #[test]
    fn bad_entries_name_the_flag_and_the_fix() {
        let listen = [tcp("api"), unix("local")];
        let e = per_listener("--tls-cert", &["a.pem".into()], &listen).unwrap_err();
        assert!(
            e.0.contains("unix socket") && e.0.contains("NAME=FILE"),
            "{e}"
        );
        let e = per_listener("--tls-cert", &["local=a.pem".into()], &listen).unwrap_err();
        assert!(e.0.contains("unix socket"), "{e}");
        let e = per_listener("--tls-key", &["nope=a.pem".into()], &listen).unwrap_err();
        assert!(e.0.contains("no listener is named `nope`"), "{e}");
        let e = per_listener("--tls-key", &["a".into(), "b".into()], &listen).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
        assert!(per_listener("--tls-cert", &["api=a.pem".into()], &listen).is_ok());
    }

    #[test]
    fn the_file_takes_a_string_or_a_list_and_a_flag_replaces_it() {
        let file = FileConfig::parse(
            "tls_cert = \"a.pem\"\ntls_key = [\"api=a.key\", \"b.key\"]\ntls_client_ca = 3\n",
        )
        .unwrap();
        assert_eq!(entries(&[], &file, "tls_cert").unwrap(), ["a.pem"]);
        assert_eq!(
            entries(&[], &file, "tls_key").unwrap(),
            ["api=a.key", "b.key"]
        );
        assert_eq!(
            entries(&["c.pem".into()], &file, "tls_cert").unwrap(),
            ["c.pem"]
        );
        let e = entries(&[], &file, "tls_client_ca").unwrap_err();
        assert!(
            e.0.contains("`tls_client_ca` must be a file name or a list"),
            "{e}"
        );
        let file = FileConfig::parse("tls_handshake_timeout = \"soon\"\n").unwrap();
        let e = TlsSettings::resolve(&TlsArgs::default(), &file, &[tcp("a")], true).unwrap_err();
        assert!(e.0.contains("config key `tls_handshake_timeout`"), "{e}");
        let file = FileConfig::parse("tls_handshake_timeout = 2.5\n").unwrap();
        let ok = TlsSettings::resolve(&TlsArgs::default(), &file, &[tcp("a")], true).unwrap();
        assert_eq!(ok.handshake_timeout, Duration::from_millis(2500));
        assert!(ok.listeners.is_empty());
    }

    #[test]
    fn tls_is_for_the_embedded_runtime_only() {
        let args = TlsArgs {
            tls_cert: vec!["a.pem".into()],
            tls_key: vec!["a.key".into()],
            ..TlsArgs::default()
        };
        let e =
            TlsSettings::resolve(&args, &FileConfig::default(), &[tcp("a")], false).unwrap_err();
        assert!(
            e.0.starts_with("--tls-cert: TLS is served by drover's embedded runtime only"),
            "{e}"
        );
        let half = TlsArgs {
            tls_cert: vec!["a.pem".into()],
            ..TlsArgs::default()
        };
        let e = TlsSettings::resolve(&half, &FileConfig::default(), &[tcp("a")], true).unwrap_err();
        assert!(e.0.contains("without its --tls-key"), "{e}");
        let auth = TlsArgs {
            tls_client_auth: Some("sometimes".into()),
            ..TlsArgs::default()
        };
        let e = TlsSettings::resolve(&auth, &FileConfig::default(), &[tcp("a")], true).unwrap_err();
        assert!(e.0.contains("`required` or `optional`"), "{e}");
        let slow = TlsArgs {
            tls_handshake_timeout: Some("0".into()),
            ..TlsArgs::default()
        };
        let e = TlsSettings::resolve(&slow, &FileConfig::default(), &[tcp("a")], true).unwrap_err();
        assert!(e.0.contains("--tls-handshake-timeout '0'"), "{e}");
    }
}
