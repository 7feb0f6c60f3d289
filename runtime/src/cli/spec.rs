//! `husk spec`: write a default config.json, as `runc spec` does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use oci_spec::runtime::Spec;

/// Arguments of `husk spec`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Where to write config.json.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
}

/// Writes it; refuses to overwrite one.
pub fn run(args: SpecArgs) -> anyhow::Result<ExitCode> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        anyhow::bail!("{path:?} exists: remove it first");
    }
    let spec = Spec::default();
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(ExitCode::SUCCESS)
}
