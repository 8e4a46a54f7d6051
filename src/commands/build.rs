use labship::config::Config;
use labship::docker::Engine;
use labship::error::Result;
use labship::output::Printer;

pub async fn run(config: Config, printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let config = labship::build::base::prefer_offline(&engine, &config).await?;
    let report = labship::build::build_with_offline_fallback(&engine, &config, printer).await?;
    super::emit(printer, &report)
}
