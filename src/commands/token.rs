use std::io::Read;

use serde::Serialize;

use crate::cli::{named, GlobalArgs, TokenArgs};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::output::Printer;
use crate::token::TokenFinding;

/// The token on its own line in text mode (for `$(labship token)`), an object in JSON.
#[derive(Serialize)]
struct TokenReport {
    token: String,
    url: String,
}

impl std::fmt::Display for TokenReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.token)
    }
}

impl From<TokenFinding> for TokenReport {
    fn from(found: TokenFinding) -> Self {
        TokenReport {
            token: found.token.expose().to_string(),
            url: found.url,
        }
    }
}

pub async fn run(args: &TokenArgs, global: &GlobalArgs, printer: &Printer) -> Result<()> {
    let found = match &args.from_log {
        Some(path) => {
            let (origin, text) = read_log(path)?;
            crate::token::find_token(&text).map_err(|e| crate::local::token_error(e, &origin))?
        }
        None => {
            let config = super::load(named(global, &args.deployment, args.on))?;
            if config.target == crate::config::Target::Ec2 {
                let aws = crate::aws::load(&config).await?;
                // The URL on the instance's public address, not the one Jupyter logged.
                let (found, url) = crate::ec2::info::token(&aws, &config.name).await?;
                return super::emit(
                    printer,
                    &TokenReport {
                        url,
                        ..found.into()
                    },
                );
            }
            let engine = Engine::connect().await?;
            crate::local::token(&engine, &config.name).await?
        }
    };
    super::emit(printer, &TokenReport::from(found))
}

fn read_log(path: &std::path::Path) -> Result<(String, String)> {
    let mut bytes = Vec::new();
    let origin = if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|source| Error::ReadInput {
                path: "(stdin)".into(),
                source,
            })?;
        "standard input".to_string()
    } else {
        bytes = std::fs::read(path).map_err(|source| Error::ReadInput {
            path: path.to_path_buf(),
            source,
        })?;
        path.display().to_string()
    };
    Ok((origin, String::from_utf8_lossy(&bytes).into_owned()))
}
