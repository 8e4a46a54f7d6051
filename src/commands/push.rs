use labship::config::Config;
use labship::docker::Engine;
use labship::error::Result;
use labship::output::Printer;
use labship::push::Ecr;

pub async fn run(config: Config, printer: &Printer) -> Result<()> {
    // Ctrl-C stops at the next safe point (a repository is never left without its policy).
    labship::interrupt::install(labship::interrupt::Then::Remove(super::down_command(
        &config,
        labship::config::Target::Ec2,
        " --purge-images",
    )))?;
    let engine = Engine::connect().await?;
    let config = labship::build::base::prefer_offline(&engine, &config).await?;
    let aws = labship::aws::load(&config).await?;
    let ecr = Ecr::new(&aws, config.push.registry_endpoint.clone());
    let report = labship::push::push(&engine, &ecr, &config, printer).await?;
    super::emit(printer, &report)
}
