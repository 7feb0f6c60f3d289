//! `husk kill`: send a signal to the container's process.

use std::process::ExitCode;

use clap::Args;
use husk::container::lifecycle;

use super::Globals;

/// Arguments of `husk kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Send it to every process of the container.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// The signal: a name (TERM, SIGKILL) or a number.
    #[arg(default_value = "SIGTERM", value_parser = parse_signal)]
    pub signal: u32,
}

/// Parses a signal name or number.
pub fn parse_signal(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is out of range"))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as u32)
        .map_err(|_| format!("{s:?} is not a signal name"))
}

/// Sends it.
pub fn run(args: KillArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    lifecycle::kill(&globals.root, &args.id, args.signal, args.all)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("hup"), Ok(1));
        assert_eq!(parse_signal("10"), Ok(10));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("FROB").is_err());
    }
}
