//! The local forwarder of `labship connect`: plain HTTP on 127.0.0.1 for the browser, TLS to
//! the instance with the pinned certificate. It forwards bytes, not requests, so everything
//! Jupyter speaks (pages, its REST API, the kernel and terminal websockets) passes unchanged,
//! and the browser's `Host` and `Origin` stay `127.0.0.1:PORT` on both sides of Jupyter's
//! checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};
use crate::tls::{Fingerprint, TlsError};

/// How many ports after the first one are tried.
const PORT_TRIES: u16 = 100;
/// How long a connection to the instance may take before the browser gets an error page.
const CONNECT_WITHIN: Duration = Duration::from_secs(15);

/// Where the forwarder sends what it accepts.
#[derive(Debug, Clone)]
pub struct Remote {
    /// `IP:PORT` of Jupyter on the instance.
    pub addr: String,
    /// The certificate it must present.
    pub pin: Fingerprint,
}

/// Listens on 127.0.0.1, on `port` or (when `None`) the first free port from 8888.
pub async fn listen(port: Option<u16>) -> Result<TcpListener> {
    let (first, last) = match port {
        Some(p) => (p, p),
        None => (8888, 8888 + PORT_TRIES - 1),
    };
    let mut p = first;
    let e = loop {
        match TcpListener::bind(("127.0.0.1", p)).await {
            Ok(listener) => return Ok(listener),
            Err(e) if p >= last => break e,
            Err(_) => p += 1,
        }
    };
    Err(Error::InvalidSetting {
        what: "port",
        value: p.to_string(),
        reason: format!("cannot listen on 127.0.0.1:{p}: {e}"),
        hint: match port {
            Some(_) => "choose another port with --port, or stop what uses this one".into(),
            None => format!(
                "ports 8888-{} are all in use; choose one with --port",
                8888 + PORT_TRIES - 1
            ),
        },
    })
}

/// Connects once to check that the instance presents the pinned certificate, before the URL
/// is given to anyone.
pub async fn check(remote: &Remote) -> std::result::Result<(), TlsError> {
    connect(remote).await.map(drop)
}

/// A pinned TLS connection to the instance, bounded by [`CONNECT_WITHIN`].
async fn connect(remote: &Remote) -> std::result::Result<TlsStream<TcpStream>, TlsError> {
    tokio::time::timeout(
        CONNECT_WITHIN,
        crate::tls::connect_pinned(&remote.addr, remote.pin),
    )
    .await
    .map_err(|_| {
        TlsError::Failed(format!(
            "{} did not answer within {}s",
            remote.addr,
            CONNECT_WITHIN.as_secs()
        ))
    })?
}

/// Accepts connections until `stop` completes; each one is forwarded on its own task.
pub async fn serve(
    listener: TcpListener,
    remote: Remote,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let remote = Arc::new(remote);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    let remote = remote.clone();
                    tokio::spawn(async move { forward(client, &remote).await });
                }
                // Out of file descriptors and the like: wait a moment, keep serving.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn forward(mut client: TcpStream, remote: &Remote) {
    let _ = client.set_nodelay(true);
    match connect(remote).await {
        Ok(mut tls) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut tls).await {
                tracing::debug!("connection to {} closed: {e}", remote.addr);
            }
        }
        Err(e) => refuse(&mut client, &e.to_string()).await,
    }
}

/// Answers the browser with a 502 page that says why, and says it on stderr too.
async fn refuse(client: &mut TcpStream, why: &str) {
    eprintln!("labship connect: {why}");
    let body = format!("labship connect: {why}\n");
    let answer = format!(
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(answer.as_bytes()).await;
    let _ = client.shutdown().await;
}
