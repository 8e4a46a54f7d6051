use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::output::Printer;

pub async fn run(config: Config, printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let config = crate::base::prefer_offline(&engine, &config).await?;
    let report = crate::build::build_with_offline_fallback(&engine, &config, printer).await?;
    super::emit(printer, &report)
}
