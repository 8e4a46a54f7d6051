use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::output::Printer;
use crate::push::Ecr;

pub async fn run(config: Config, printer: &Printer) -> Result<()> {
    let engine = Engine::connect().await?;
    let config = crate::base::prefer_offline(&engine, &config).await?;
    let aws = crate::aws::load(&config).await?;
    let ecr = Ecr::new(&aws, config.push.registry_endpoint.clone());
    let report = crate::push::push(&engine, &ecr, &config, printer).await?;
    super::emit(printer, &report)
}
