//! TLS to the database, with libpq's settings and meaning, over rustls.
//!
//! A store URL may carry libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! (or the environment's `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! and, as libpq, `~/.postgresql/root.crt`, `postgresql.crt` and `postgresql.key`
//! when those files exist). tokio-postgres itself knows only `disable`, `prefer`
//! and `require`, so [`take`] removes these parameters from the URL before it is
//! parsed and [`Tls::connector`] builds the rustls configuration that gives each
//! mode libpq's meaning:
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | checked against the root certificates if there are any, else not checked |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | signed by a root certificate (the name is not checked) |
//! | `verify-full` | always | signed by a root certificate, for the host of the URL |
//!
//! `sslrootcert=system` takes the operating system's roots and implies
//! `verify-full` (weaker modes with it are refused, as by libpq 16). `allow` is
//! refused (it would mean trying plain TCP first).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values that ddimd takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(s: &str) -> Result<Mode, String> {
        Ok(match s {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported (it tries plain TCP first): use \
                            prefer, require or disable"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode={other}: not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS is tried and whether it is a must.
    pub fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// Where the root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// None: the server's certificate is not checked (`prefer`, `require`).
    None,
    /// A PEM file of one or more certificates.
    File(PathBuf),
    /// The operating system's store (`sslrootcert=system`).
    System,
}

/// The TLS settings of one store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: Mode,
    pub roots: Roots,
    /// A client certificate and its key (PEM files), for `cert` authentication.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Where a setting was found, for messages: the URL's parameter or the
/// environment variable.
struct Found {
    value: String,
    from: String,
}

/// Removes libpq's TLS parameters from `url`'s query and returns the URL that is
/// left (for tokio-postgres's parser) and the settings, with the environment and
/// `~/.postgresql` filled in as libpq does. Errors are one line (without the URL,
/// which the caller puts in front).
pub fn take(url: &str) -> Result<(String, Tls), String> {
    take_with(url, &|k| std::env::var(k).ok(), dirs::home_dir().as_deref())
}

fn take_with(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<(String, Tls), String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut kept = Vec::new();
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if ["sslmode", "sslrootcert", "sslcert", "sslkey"].contains(&k) {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| format!("{k}: not UTF-8 after percent-decoding"))?;
            params.retain(|(p, _)| p != k);
            params.push((k.to_string(), v.into_owned()));
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let get = |key: &str, var: &str| -> Option<Found> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| Found {
                value: v.clone(),
                from: key.to_string(),
            })
            .or_else(|| {
                env(var).filter(|v| !v.is_empty()).map(|v| Found {
                    value: v,
                    from: var.to_string(),
                })
            })
    };
    let mode = get("sslmode", "PGSSLMODE");
    let mut m = match &mode {
        Some(f) => Mode::parse(&f.value).map_err(|e| match f.from.as_str() {
            "sslmode" => e,
            var => format!("{var}: {e}"),
        })?,
        None => Mode::Prefer,
    };
    let pgdir = home.map(|h| h.join(".postgresql"));
    let root = get("sslrootcert", "PGSSLROOTCERT");
    let roots = match &root {
        Some(f) if f.value == "system" => {
            match &mode {
                None => m = Mode::VerifyFull,
                Some(_) if m == Mode::VerifyFull => {}
                Some(_) => {
                    return Err(format!(
                        "sslmode={} may not be used with sslrootcert=system (use verify-full)",
                        m.name()
                    ))
                }
            }
            Roots::System
        }
        Some(f) => Roots::File(PathBuf::from(&f.value)),
        None => match pgdir.as_ref().map(|d| d.join("root.crt")) {
            Some(p) if p.is_file() => Roots::File(p),
            _ => Roots::None,
        },
    };
    if matches!(m, Mode::VerifyCa | Mode::VerifyFull) && roots == Roots::None {
        return Err(format!(
            "sslmode={} needs root certificates to check the server's against: \
             sslrootcert=FILE (or PGSSLROOTCERT, or ~/.postgresql/root.crt), or \
             sslrootcert=system for the system's",
            m.name()
        ));
    }
    let cert = get("sslcert", "PGSSLCERT");
    let key = get("sslkey", "PGSSLKEY");
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((PathBuf::from(c.value), PathBuf::from(k.value))),
        (Some(c), None) => return Err(format!("{} is set but not sslkey", c.from)),
        (None, Some(k)) => return Err(format!("{} is set but not sslcert", k.from)),
        (None, None) => pgdir.and_then(|d| {
            let (c, k) = (d.join("postgresql.crt"), d.join("postgresql.key"));
            (c.is_file() && k.is_file()).then_some((c, k))
        }),
    };
    let tls = Tls {
        mode: m,
        roots: if m == Mode::Disable {
            Roots::None
        } else {
            roots
        },
        client: if m == Mode::Disable { None } else { client },
    };
    Ok((rest, tls))
}

impl Tls {
    /// The connector for tokio-postgres: reads the certificate files now, so a
    /// missing or unreadable one is an error at start, naming the file.
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.roots {
            Roots::None => Arc::new(AnyCertificate(provider.clone())),
            roots => {
                let store = Arc::new(root_store(roots)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
                if self.mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert, "sslcert")?;
                let k = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("sslkey {}: {}", key.display(), pem_error(&e)))?;
                builder
                    .with_client_auth_cert(chain, k)
                    .map_err(|e| format!("sslcert/sslkey: {e}"))?
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::None => {}
        Roots::File(p) => {
            for c in certificates(p, "sslrootcert")? {
                store
                    .add(c)
                    .map_err(|e| format!("sslrootcert {}: {e}", p.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (n, _) = store.add_parsable_certificates(found.certs);
            if n == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(format!(
                    "sslrootcert=system: no root certificates found on this system{why}"
                ));
            }
        }
    }
    Ok(store)
}

/// The certificates of a PEM file; none is an error naming the setting.
fn certificates(p: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = p.display();
    let certs = CertificateDer::pem_file_iter(p)
        .map_err(|e| format!("{what} {shown}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {shown}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{what} {shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM key in it".into(),
        e => format!("not a PEM file ({e:?})"),
    }
}

/// `prefer` and `require` without root certificates: encryption, and the
/// handshake's signatures checked, but not who signed the certificate (libpq's
/// meaning of these modes).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with root certificates): the chain must
/// lead to a root, the name in the certificate may differ from the URL's host.
/// webpki checks the chain before the name, so a name mismatch is all that is
/// forgiven here.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take_env(
        url: &str,
        vars: &[(&str, &str)],
        home: Option<&Path>,
    ) -> Result<(String, Tls), String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        take_with(
            url,
            &|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            home,
        )
    }

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stays() {
        let (rest, t) = take_env(
            "postgres://u:p@h:5/db?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&application_name=a",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@h:5/db?connect_timeout=5&application_name=a"
        );
        assert_eq!(t.mode, Mode::VerifyFull);
        assert_eq!(t.roots, Roots::File("/etc/ca x.pem".into()));
        assert_eq!(t.client, None);
        let (rest, t) = take_env("postgres://h/db", &[], None).unwrap();
        assert_eq!(
            (rest.as_str(), t.mode, t.roots),
            ("postgres://h/db", Mode::Prefer, Roots::None)
        );
        let (rest, _) = take_env("postgres://h/db?sslmode=require", &[], None).unwrap();
        assert_eq!(rest, "postgres://h/db");
    }

    #[test]
    fn the_environment_and_home_fill_in_as_libpq() {
        let home = tempfile::tempdir().unwrap();
        let (_, t) = take_env(
            "postgres://h/db",
            &[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", "/r.pem")],
            Some(home.path()),
        )
        .unwrap();
        assert_eq!(
            (t.mode, t.roots),
            (Mode::VerifyCa, Roots::File("/r.pem".into()))
        );
        // The URL wins over the environment.
        let (_, t) = take_env(
            "postgres://h/db?sslmode=disable",
            &[("PGSSLMODE", "require")],
            None,
        )
        .unwrap();
        assert_eq!(t.mode, Mode::Disable);
        // ~/.postgresql's files when they exist.
        let pg = home.path().join(".postgresql");
        std::fs::create_dir(&pg).unwrap();
        for f in ["root.crt", "postgresql.crt", "postgresql.key"] {
            std::fs::write(pg.join(f), "x").unwrap();
        }
        let (_, t) = take_env("postgres://h/db?sslmode=require", &[], Some(home.path())).unwrap();
        assert_eq!(t.roots, Roots::File(pg.join("root.crt")));
        assert_eq!(
            t.client,
            Some((pg.join("postgresql.crt"), pg.join("postgresql.key")))
        );
        // disable reads none of them.
        let (_, t) = take_env("postgres://h/db?sslmode=disable", &[], Some(home.path())).unwrap();
        assert_eq!((t.roots, t.client), (Roots::None, None));
    }

    #[test]
    fn bad_settings_are_one_line_naming_the_setting() {
        let err = |url: &str, vars: &[(&str, &str)]| take_env(url, vars, None).unwrap_err();
        let e = err("postgres://h/db?sslmode=verify-full", &[]);
        assert!(
            e.contains("sslmode=verify-full") && e.contains("sslrootcert"),
            "{e}"
        );
        let e = err("postgres://h/db?sslmode=allow", &[]);
        assert!(e.contains("sslmode=allow"), "{e}");
        let e = err("postgres://h/db?sslmode=strict", &[]);
        assert!(
            e.contains("sslmode=strict") && e.contains("verify-full"),
            "{e}"
        );
        let e = err("postgres://h/db", &[("PGSSLMODE", "bogus")]);
        assert!(e.starts_with("PGSSLMODE: sslmode=bogus"), "{e}");
        let e = err("postgres://h/db?sslmode=require&sslrootcert=system", &[]);
        assert!(
            e.contains("sslrootcert=system") && e.contains("verify-full"),
            "{e}"
        );
        let e = err("postgres://h/db?sslcert=/c.pem", &[]);
        assert_eq!(e, "sslcert is set but not sslkey");
        let e = err("postgres://h/db", &[("PGSSLKEY", "/k.pem")]);
        assert_eq!(e, "PGSSLKEY is set but not sslcert");
        for e in [
            err("postgres://h/db?sslmode=verify-ca", &[]),
            err("postgres://h/db?sslcert=/c", &[]),
        ] {
            assert!(!e.contains('\n'), "{e}");
        }
        // system alone means verify-full.
        let (_, t) = take_env("postgres://h/db?sslrootcert=system", &[], None).unwrap();
        assert_eq!((t.mode, t.roots), (Mode::VerifyFull, Roots::System));
    }

    #[test]
    fn unreadable_or_empty_certificate_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let t = Tls {
            mode: Mode::VerifyCa,
            roots: Roots::File(missing.clone()),
            client: None,
        };
        let e = t.connector().err().expect("missing file");
        assert!(
            e.starts_with(&format!("sslrootcert {}: cannot read", missing.display())),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let t = Tls {
            roots: Roots::File(empty.clone()),
            ..t
        };
        let e = t.connector().err().expect("empty file");
        assert!(e.contains("no PEM certificate"), "{e}");
        // No roots: no file to read, a connector.
        let t = Tls {
            mode: Mode::Require,
            roots: Roots::None,
            client: None,
        };
        assert!(t.connector().is_ok());
    }

    /// Against a real PostgreSQL that takes TCP connections over TLS only, with a
    /// certificate for `localhost` signed by a test CA: each mode connects or
    /// refuses as libpq's would, and a connection that is made is encrypted.
    #[test]
    fn each_mode_against_a_tls_only_server() {
        use crate::server::error::ServerError;
        use crate::server::pg::{Pg, Schema};
        use ddim_tests::pg::{PgServer, ServerTls};
        use ddim_tests::tls::Ca;
        let ca = Ca::new("ddim test CA");
        let other = Ca::new("another CA");
        let pg = PgServer::start_tls(ServerTls {
            server: ca.issue(&["localhost"], "db"),
            client_ca: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write(dir.path(), "ca.crt").display().to_string();
        let other_file = other.write(dir.path(), "other.crt").display().to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = |host: &str, q: &str| format!("postgres://ddim@{host}:{}/ddim?{q}", pg.port());
        let connect = |u: String| rt.block_on(Pg::connect(&u, "--store", 1, Schema::Migrate));
        let encrypted = |p: &Pg| {
            rt.block_on(async {
                let c = p.client().await.unwrap();
                c.query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
            })
        };
        for (u, what) in [
            (url("127.0.0.1", "sslmode=prefer"), "prefer, no roots"),
            (url("127.0.0.1", "sslmode=require"), "require, no roots"),
            (
                url(
                    "127.0.0.1",
                    &format!("sslmode=require&sslrootcert={ca_file}"),
                ),
                "require, its CA",
            ),
            (
                url(
                    "127.0.0.1",
                    &format!("sslmode=verify-ca&sslrootcert={ca_file}"),
                ),
                "verify-ca, another name",
            ),
            (
                url(
                    "localhost",
                    &format!("sslmode=verify-full&sslrootcert={ca_file}"),
                ),
                "verify-full",
            ),
        ] {
            let p = connect(u).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(encrypted(&p), "{what}: not encrypted");
        }
        let refused = |u: String, want: &str| {
            let e = connect(u).expect_err(want);
            let m = e.to_string();
            assert!(matches!(e, ServerError::Config(_)), "{e:?}");
            assert!(m.contains(want) && !m.contains('\n'), "want {want:?}: {m}");
        };
        // Plain TCP: the server wants TLS.
        refused(url("127.0.0.1", "sslmode=disable"), "no encryption");
        // verify-full checks the name: the certificate is for localhost.
        refused(
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca_file}"),
            ),
            "certificate not valid for name",
        );
        // Another CA's roots: the chain does not lead to them, whatever the mode.
        for mode in ["require", "verify-ca", "verify-full"] {
            refused(
                url(
                    "localhost",
                    &format!("sslmode={mode}&sslrootcert={other_file}"),
                ),
                "UnknownIssuer",
            );
        }
    }

    /// `cert` authentication: the client's certificate, signed by the CA the
    /// server trusts and naming the user, is the login.
    #[test]
    fn a_client_certificate_logs_in() {
        use crate::server::pg::{Pg, Schema};
        use ddim_tests::pg::{PgServer, ServerTls};
        use ddim_tests::tls::Ca;
        let ca = Ca::new("ddim test CA");
        let pg = PgServer::start_tls(ServerTls {
            server: ca.issue(&["localhost"], "db"),
            client_ca: Some(ca.pem().to_string()),
        });
        let dir = tempfile::tempdir().unwrap();
        let root = ca.write(dir.path(), "ca.crt").display().to_string();
        let (crt, key) = ca.issue(&[], "ddim").write(dir.path(), "ddim");
        let (mcrt, mkey) = ca.issue(&[], "mallory").write(dir.path(), "mallory");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = |q: String| {
            format!(
                "postgres://ddim@localhost:{}/ddim?sslmode=verify-full&sslrootcert={root}{q}",
                pg.port()
            )
        };
        let connect = |u: String| rt.block_on(Pg::connect(&u, "--store", 1, Schema::Migrate));
        let p = connect(url(format!(
            "&sslcert={}&sslkey={}",
            crt.display(),
            key.display()
        )))
        .expect("the client certificate logs in");
        rt.block_on(async { p.client().await.unwrap().execute("SELECT 1", &[]).await })
            .unwrap();
        let e = connect(url(String::new()))
            .expect_err("no client certificate")
            .to_string();
        assert!(
            e.contains("connection requires a valid client certificate"),
            "{e}"
        );
        let e = connect(url(format!(
            "&sslcert={}&sslkey={}",
            mcrt.display(),
            mkey.display()
        )))
        .expect_err("another user's certificate")
        .to_string();
        assert!(
            e.contains("certificate authentication failed for user \"ddim\""),
            "{e}"
        );
    }
}
