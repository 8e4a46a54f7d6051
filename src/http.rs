//! A minimal HTTP/1.1 client over any byte stream: the engine's unix socket for the push
//! call, loopback TCP for checking that a Jupyter URL answers, and TLS (rustls, verified
//! against the system's roots) for the caller's address. hyper and rustls are already in the
//! tree through bollard and the AWS SDK, so this costs no new crate.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Sends one request on a fresh connection (any body: empty, or a stream such as a build
/// context).
pub async fn send<I, B>(
    io: I,
    request: Request<B>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
    sender.send_request(request).await
}

/// The status code of `GET http://{addr}{path_and_query}`, or why there was none.
pub async fn get_status(addr: &str, path_and_query: &str, within: Duration) -> Result<u16, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let request = Request::get(path_and_query)
            .header("Host", addr)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = send(TokioIo::new(stream), request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    };
    tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| format!("no answer within {}s", within.as_secs()))?
}

/// Status and body (lossily decoded, at most 64 KiB) of `GET http://{addr}{path_and_query}`;
/// `addr` is `host:port` and may need DNS.
pub async fn get_text(
    addr: &str,
    path_and_query: &str,
    within: Duration,
) -> Result<(u16, String), String> {
    let (status, body) = get_bytes(addr, path_and_query, None, 64 * 1024, within).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Status and body (at most `limit` bytes) of `GET http://{addr}{path_and_query}`, with an
/// `Authorization: token ...` header when `token` is given (so it never sits in a URL).
pub async fn get_bytes(
    addr: &str,
    path_and_query: &str,
    token: Option<&str>,
    limit: usize,
    within: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .to_string();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        exchange(stream, &host, Call::get(path_and_query, token), limit).await
    };
    tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| format!("no answer within {}s", within.as_secs()))?
}

/// Where a Jupyter answers: plain HTTP (on this machine), or HTTPS to a labship host whose
/// certificate is pinned by its fingerprint.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Plain(String),
    Pinned(String, crate::tls::Fingerprint),
}

impl Endpoint {
    /// `http://ADDR` or `https://ADDR`, for messages.
    #[must_use]
    pub fn base_url(&self) -> String {
        match self {
            Endpoint::Plain(addr) => format!("http://{addr}"),
            Endpoint::Pinned(addr, _) => format!("https://{addr}"),
        }
    }
}

/// Why [`get_bytes_at`] got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The TLS connection to a pinned endpoint failed (a certificate that is not the pinned
    /// one among the reasons).
    Tls(crate::tls::TlsError),
    /// Anything else: no connection, a broken answer, too slow.
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Tls(e) => e.fmt(f),
            FetchError::Other(e) => f.write_str(e),
        }
    }
}

/// [`get_bytes`] at an [`Endpoint`]: over TLS with the pinned certificate when it has one.
pub async fn get_bytes_at(
    endpoint: &Endpoint,
    path_and_query: &str,
    token: Option<&str>,
    limit: usize,
    within: Duration,
) -> Result<(u16, Vec<u8>), FetchError> {
    call_at(endpoint, Call::get(path_and_query, token), limit, within).await
}

/// `PUT` of a JSON body at an [`Endpoint`] (Jupyter's contents API saving a file): status
/// and answer (at most `limit` bytes).
pub async fn put_json_at(
    endpoint: &Endpoint,
    path_and_query: &str,
    token: &str,
    body: Vec<u8>,
    limit: usize,
    within: Duration,
) -> Result<(u16, Vec<u8>), FetchError> {
    let call = Call {
        method: hyper::Method::PUT,
        path_and_query,
        token: Some(token),
        json: Some(body),
    };
    call_at(endpoint, call, limit, within).await
}

/// One request: its method, path, token and JSON body.
struct Call<'a> {
    method: hyper::Method,
    path_and_query: &'a str,
    token: Option<&'a str>,
    json: Option<Vec<u8>>,
}

impl<'a> Call<'a> {
    fn get(path_and_query: &'a str, token: Option<&'a str>) -> Call<'a> {
        Call {
            method: hyper::Method::GET,
            path_and_query,
            token,
            json: None,
        }
    }
}

async fn call_at(
    endpoint: &Endpoint,
    call: Call<'_>,
    limit: usize,
    within: Duration,
) -> Result<(u16, Vec<u8>), FetchError> {
    let (addr, pin) = match endpoint {
        Endpoint::Plain(addr) => (addr, None),
        Endpoint::Pinned(addr, pin) => (addr, Some(*pin)),
    };
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let attempt = async {
        match pin {
            Some(pin) => {
                let tls = crate::tls::connect_pinned(addr, pin)
                    .await
                    .map_err(FetchError::Tls)?;
                exchange(tls, host, call, limit)
                    .await
                    .map_err(FetchError::Other)
            }
            None => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| FetchError::Other(e.to_string()))?;
                exchange(stream, host, call, limit)
                    .await
                    .map_err(FetchError::Other)
            }
        }
    };
    tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| FetchError::Other(format!("no answer within {}s", within.as_secs())))?
}

/// Status and body (lossily decoded, at most 64 KiB) of `GET https://{host}:{port}{path}`,
/// the server's certificate verified against this machine's root certificates.
pub async fn get_text_https(
    host: &str,
    port: u16,
    path_and_query: &str,
    within: Duration,
) -> Result<(u16, String), String> {
    let attempt = async {
        let tls = crate::tls::connect_web(host, port).await?;
        exchange(tls, host, Call::get(path_and_query, None), 64 * 1024).await
    };
    let (status, body) = tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| format!("no answer within {}s", within.as_secs()))??;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One request on an open connection: status and body (at most `limit` bytes).
async fn exchange<I>(
    io: I,
    host: &str,
    call: Call<'_>,
    limit: usize,
) -> Result<(u16, Vec<u8>), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let mut request = Request::builder()
        .method(call.method)
        .uri(call.path_and_query)
        .header("Host", host)
        .header("User-Agent", concat!("labship/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = call.token {
        request = request.header("Authorization", format!("token {t}"));
    }
    if call.json.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(call.json.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = send(TokioIo::new(io), request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}
