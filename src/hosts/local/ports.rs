//! Choosing the host port: the first free one from 8888, or the one asked for; when it is
//! taken, saying who holds it (a container, or a process found through /proc).

use std::net::TcpListener;

use crate::docker::Engine;
use crate::error::{Error, Result};

/// How far past the start port to look for a free one.
const SCAN: u16 = 100;

pub fn is_free(bind: &str, port: u16) -> bool {
    let addr = if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    };
    TcpListener::bind(addr).is_ok()
}

pub fn first_free(bind: &str, from: u16) -> Result<u16> {
    (from..from.saturating_add(SCAN))
        .find(|p| is_free(bind, *p))
        .ok_or_else(|| Error::PortBusy {
            port: from,
            bind: bind.to_string(),
            holder: format!(" (and so are the next {} ports)", SCAN - 1),
        })
}

/// The error for a taken port, naming its holder when it can be found.
pub async fn busy(engine: &Engine, bind: &str, port: u16) -> Error {
    let holder = match engine.containers_publishing(port).await {
        Ok(names) if !names.is_empty() => format!(" by container {}", names.join(", ")),
        _ => process_listening(port)
            .map(|p| format!(" by {p}"))
            .unwrap_or_default(),
    };
    Error::PortBusy {
        port,
        bind: bind.to_string(),
        holder,
    }
}

/// `name (pid N)` of the process listening on `port`, read from /proc (Linux only; None
/// elsewhere or when the socket belongs to another user).
fn process_listening(port: u16) -> Option<String> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            listening_inode(&text, port)
        })?;
    let needle = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle) {
                let comm =
                    std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("{} (pid {pid})", comm.trim()));
            }
        }
    }
    None
}

/// The inode of the socket listening (state 0A) on `port` in a /proc/net/tcp table.
fn listening_inode(table: &str, port: u16) -> Option<u64> {
    let want = format!("{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local = cols.get(1)?;
        let state = cols.get(3)?;
        let inode = cols.get(9)?;
        (local.rsplit(':').next() == Some(want.as_str()) && *state == "0A")
            .then(|| inode.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_socket_in_proc_net_tcp() {
        // Two lines as Linux prints them: 127.0.0.1:8888 LISTEN, and an established socket.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:22B9 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 515151 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(listening_inode(table, 8888), Some(424242));
        assert_eq!(listening_inode(table, 8889), None);
    }

    #[test]
    fn a_held_port_is_not_free_and_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_free("127.0.0.1", port));
        let holder = process_listening(port).expect("this test process holds it");
        assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "{holder}"
        );
        drop(listener);
        assert!(is_free("127.0.0.1", port));
    }
}
