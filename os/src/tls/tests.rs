use std::path::PathBuf;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use super::*;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("drover-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// A self-signed certificate for localhost: (cert PEM, key PEM).
fn pair() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn files(d: &Dir, cert: &str, key: &str) -> TlsFiles {
    let (c, k) = (d.0.join("cert.pem"), d.0.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    TlsFiles {
        cert: c,
        key: k,
        client_ca: None,
    }
}

#[test]
fn a_pair_loads_and_its_digest_follows_the_contents() {
    let d = dir("load");
    let (cert, key) = pair();
    let f = files(&d, &cert, &key);
    let alpn = vec![b"http/1.1".to_vec()];
    let a = load(&f, ClientAuth::Required, &alpn).unwrap();
    assert_eq!(a.config.alpn_protocols, alpn);
    assert_eq!(
        a.digest,
        load(&f, ClientAuth::Required, &alpn).unwrap().digest
    );
    let (cert2, key2) = pair();
    let f = files(&d, &cert2, &key2);
    assert_ne!(
        a.digest,
        load(&f, ClientAuth::Required, &alpn).unwrap().digest
    );
}

#[test]
fn bad_files_name_the_flag_and_the_file() {
    let d = dir("bad");
    let (cert, key) = pair();
    let mut f = files(&d, &cert, &key);
    f.cert = d.0.join("missing.pem");
    let e = load(&f, ClientAuth::Required, &[]).unwrap_err();
    assert!(
        e.starts_with("--tls-cert ") && e.contains("missing.pem") && e.contains("cannot read"),
        "{e}"
    );

    let f = files(&d, "not a certificate\n", &key);
    let e = load(&f, ClientAuth::Required, &[]).unwrap_err();
    assert!(
        e.contains("--tls-cert") && e.contains("no certificate"),
        "{e}"
    );

    let f = files(&d, &cert, "no key here\n");
    let e = load(&f, ClientAuth::Required, &[]).unwrap_err();
    assert!(
        e.starts_with("--tls-key ") && e.contains("no private key"),
        "{e}"
    );

    let (_, other_key) = pair();
    let f = files(&d, &cert, &other_key);
    let e = load(&f, ClientAuth::Required, &[]).unwrap_err();
    assert!(
        e.contains("does not match the certificate of --tls-cert"),
        "{e}"
    );

    let mut f = files(&d, &cert, &key);
    let ca = d.0.join("ca.pem");
    std::fs::write(&ca, "nothing\n").unwrap();
    f.client_ca = Some(ca);
    let e = load(&f, ClientAuth::Optional, &[]).unwrap_err();
    assert!(
        e.starts_with("--tls-client-ca ") && e.contains("no certificate"),
        "{e}"
    );
}

#[test]
fn a_subject_reads_like_nginx_shows_it() {
    let mut params = CertificateParams::new(vec!["alice".into()]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Example, Inc");
    dn.push(DnType::CommonName, "alice");
    params.distinguished_name = dn;
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    assert_eq!(
        subject::of_certificate(cert.der()).unwrap(),
        "CN=alice,O=Example\\, Inc"
    );
}
