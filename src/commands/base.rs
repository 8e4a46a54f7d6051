use serde::Serialize;

use crate::engine::Engine;
use crate::error::Result;
use crate::output::Printer;

#[derive(Serialize)]
struct BaseReport {
    image: String,
}

impl std::fmt::Display for BaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.image)
    }
}

pub async fn run(printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let image = crate::base::ensure_offline_base(&engine, printer).await?;
    super::emit(printer, &BaseReport { image })
}
