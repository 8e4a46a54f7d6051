//! TLS as labship speaks it: to a labship host, whose self-signed certificate is trusted by
//! its SHA-256 fingerprint (pinned: the instance publishes it on its serial console, which
//! only the instance can write), and to the public web, trusted by this machine's roots.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The SHA-256 digest of a certificate (its DER bytes), shown as `AB:CD:...` as
/// `openssl x509 -fingerprint -sha256` and browsers show it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a certificate in DER.
    #[must_use]
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    /// `AB:CD:...` (any case, colons optional): 32 bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&hex).map_err(|_| format!("`{s}` is not hexadecimal"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("`{s}` is not 32 bytes (a SHA-256 fingerprint)"))?;
        Ok(Fingerprint(bytes))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a TLS connection to a labship host failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The server's certificate is not the one the instance published.
    Mismatch {
        expected: Fingerprint,
        got: Fingerprint,
    },
    /// No connection, or a handshake that failed for another reason.
    Failed(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Mismatch { expected, got } => write!(
                f,
                "the server's certificate has the SHA-256 fingerprint {got}, but the instance published {expected}: someone else answers on that address"
            ),
            TlsError::Failed(why) => f.write_str(why),
        }
    }
}

/// Accepts exactly one certificate: the one whose fingerprint is pinned. The name in it is
/// not checked (the host has no domain name; the pin says more than a name would), but the
/// handshake's signatures are, so only the holder of that certificate's key can answer.
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    /// The fingerprint a refused server showed, for the error.
    seen: Arc<Mutex<Option<Fingerprint>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity.as_ref());
        if got == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(got);
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS connection to `addr` (`host:port`, `[v6]:port`) that succeeds only if the server
/// holds the certificate with fingerprint `pin`.
pub async fn connect_pinned(
    addr: &str,
    pin: Fingerprint,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let provider = provider();
    let seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(Pinned {
        pin,
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Failed(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = server_name(host).map_err(TlsError::Failed)?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| TlsError::Failed(format!("{addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        Ok(stream) => Ok(stream),
        Err(e) => match seen.lock().ok().and_then(|s| *s) {
            Some(got) => Err(TlsError::Mismatch { expected: pin, got }),
            None => Err(TlsError::Failed(format!("TLS with {addr}: {e}"))),
        },
    }
}

/// A TLS connection to `host:port` on the public web, its certificate verified against this
/// machine's root certificates and its name.
pub async fn connect_web(host: &str, port: u16) -> Result<TlsStream<TcpStream>, String> {
    let name = server_name(host)?;
    let connector = tokio_rustls::TlsConnector::from(web_config()?);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))
}

/// The name TLS checks (and sends as SNI) for a host: an IP address (`[v6]` too) or a DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host} is not a server name: {e}")),
    }
}

/// A TLS client configuration that trusts this machine's root certificates (the public web).
fn web_config() -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // One unreadable certificate in the system store does not make the others useless.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "no root certificates found on this machine ({} errors reading them); install the ca-certificates package",
            found.errors.len()
        ));
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_and_print_as_openssl_shows_them() {
        let shown = "3F:0A:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE";
        let f: Fingerprint = shown.parse().expect("parses");
        assert_eq!(f.to_string(), shown);
        assert_eq!(
            shown.to_lowercase().replace(':', "").parse::<Fingerprint>(),
            Ok(f)
        );
        assert!("3F:0A".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
        assert_eq!(
            Fingerprint::of(b"abc").to_string(),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
