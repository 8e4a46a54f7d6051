use serde::Serialize;

use labship::docker::Engine;
use labship::error::Result;
use labship::output::Printer;

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
    let image = labship::build::base::ensure_offline_base(&engine, printer).await?;
    super::emit(printer, &BaseReport { image })
}
