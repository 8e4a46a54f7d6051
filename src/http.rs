//! A minimal HTTP/1.1 client over any byte stream: the engine's unix socket for the push
//! call, and loopback TCP for checking that a Jupyter URL answers. hyper is already in the
//! tree through bollard and the AWS SDK, so this costs no new dependency.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Sends one request on a fresh connection.
pub async fn send<I>(
    io: I,
    request: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
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
    use http_body_util::BodyExt;
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(addr)
        .to_string();
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut request = Request::get(path_and_query)
            .header("Host", host)
            .header("User-Agent", concat!("labship/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = token {
            request = request.header("Authorization", format!("token {t}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = send(TokioIo::new(stream), request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body.to_vec()))
    };
    tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| format!("no answer within {}s", within.as_secs()))?
}
