//! `labship status`: every deployment, found by its labels, in one table.

use serde::Serialize;

use crate::engine::Engine;
use crate::error::Result;
use crate::tags::labels;

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub name: String,
    /// Where it runs: `local` (this machine's Docker engine).
    pub location: String,
    pub state: String,
    pub image_tag: String,
    /// The server's address without the token (`labship token` prints that).
    pub url: Option<String>,
    pub age_seconds: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub deployments: Vec<Deployment>,
}

pub async fn local(engine: &Engine) -> Result<StatusReport> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let deployments = crate::local::list(engine)
        .await?
        .into_iter()
        .map(|c| {
            let host = crate::local::url_host(c.host_ip.as_deref().unwrap_or(""));
            Deployment {
                name: c
                    .labels
                    .get(labels::DEPLOYMENT)
                    .cloned()
                    .unwrap_or_else(|| c.name.clone()),
                location: "local".into(),
                url: c
                    .host_port
                    .filter(|_| c.running())
                    .map(|p| format!("http://{host}:{p}/lab")),
                state: c.state.clone(),
                image_tag: c
                    .labels
                    .get(labels::CONTENT_TAG)
                    .cloned()
                    .unwrap_or_default(),
                age_seconds: (now - c.created).max(0),
            }
        })
        .collect();
    Ok(StatusReport { deployments })
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.deployments.is_empty() {
            return write!(f, "no deployments (start one with `labship up --local`)");
        }
        let rows: Vec<[String; 6]> = self
            .deployments
            .iter()
            .map(|d| {
                [
                    d.name.clone(),
                    d.location.clone(),
                    d.state.clone(),
                    d.image_tag.clone(),
                    d.url.clone().unwrap_or_else(|| "-".into()),
                    age(d.age_seconds),
                ]
            })
            .collect();
        let header = ["NAME", "WHERE", "STATE", "IMAGE", "URL", "AGE"].map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for (i, row) in std::iter::once(&header).chain(rows.iter()).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            write!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_ages() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(3 * 86_400), "3d");
        let report = StatusReport {
            deployments: vec![Deployment {
                name: "lab".into(),
                location: "local".into(),
                state: "running".into(),
                image_tag: "ctx-0123".into(),
                url: Some("http://127.0.0.1:8888/lab".into()),
                age_seconds: 30,
            }],
        };
        let text = report.to_string();
        assert!(text.starts_with("NAME  WHERE  STATE"), "{text}");
        assert!(
            text.contains("lab   local  running  ctx-0123  http://127.0.0.1:8888/lab  30s"),
            "{text}"
        );
    }
}
