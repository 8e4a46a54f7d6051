use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::output::Printer;

pub async fn run(config: Config, printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let report = crate::build::build(&engine, &config, printer).await?;
    super::emit(printer, &report)
}
