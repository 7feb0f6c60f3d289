//! Workloads and what they produce. A workload measures husk and its peer
//! interleaved (husk, peer, husk, peer …) and returns a [`Section`] of
//! [`Figure`]s, which `report` turns into a table and a plot. Later
//! workloads (containers, memory, network) add a module here and a
//! subcommand in `main.rs`.

pub mod boot;
pub mod containers;
pub mod cpu;
pub mod fileio;
pub mod in_container;
pub mod network;
pub mod pods;
pub mod virtiofs;

use std::time::Duration;

use crate::machine::Machine;

/// The unit of a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Millis,
    /// Mebibytes.
    MiB,
    /// A plain multiple (one figure over another).
    Times,
    /// Microseconds.
    Micros,
    /// Gigabits per second (10^9).
    Gbps,
    /// Mebibytes per second.
    MiBps,
    /// Operations (I/O requests, files) per second.
    OpsPerSec,
}

impl Unit {
    /// How the report writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Millis => "ms",
            Self::MiB => "MiB",
            Self::Times => "×",
            Self::Micros => "µs",
            Self::Gbps => "Gbit/s",
            Self::MiBps => "MiB/s",
            Self::OpsPerSec => "op/s",
        }
    }
}

/// What a figure has to meet (from DESIGN.md, "Budgets").
#[derive(Clone, Debug, PartialEq)]
pub enum Budget {
    /// husk's median at most this multiple of the peer's.
    RatioAtMost(f64),
    /// husk's median at least this multiple of the peer's (throughput).
    RatioAtLeast(f64),
    /// husk's median at most this much, in the figure's unit.
    AtMost(f64),
    /// No budget applies here, and why (e.g. "emulated").
    NotApplicable(String),
}

/// One measured quantity, for husk and for its peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Stable identifier (`boot.tiny.exit`).
    pub id: String,
    /// What is measured, for people.
    pub title: String,
    /// Where it ran (`KvmKind::place`).
    pub place: String,
    /// Unit of the samples.
    pub unit: Unit,
    /// What husk is compared against ("QEMU microvm"); empty when nothing.
    pub peer: String,
    /// husk's samples.
    pub husk: Vec<f64>,
    /// The peer's samples.
    pub peer_samples: Vec<f64>,
    /// The budget.
    pub budget: Budget,
}

/// The results of one workload in one place.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// The machine the figures were measured on.
    pub machine: Machine,
    /// Warm-up rounds and recorded rounds.
    pub warmup: usize,
    /// Recorded rounds (husk and peer each).
    pub runs: usize,
    /// The figures.
    pub figures: Vec<Figure>,
    /// Remarks: failed runs, fallbacks, caveats.
    pub notes: Vec<String>,
    /// The command lines that were measured, `(who, command)`.
    pub commands: Vec<(String, String)>,
}

impl Section {
    /// Whether husk and (where there is one) the peer each gave at least
    /// one sample; otherwise the workload could not measure at all.
    pub fn measured_anything(&self) -> bool {
        let has_peer = self.figures.iter().any(|f| !f.peer.is_empty());
        self.figures.iter().any(|f| !f.husk.is_empty())
            && (!has_peer || self.figures.iter().any(|f| !f.peer_samples.is_empty()))
    }
}

/// The two sides of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// husk.
    Husk,
    /// The peer it is compared against.
    Peer,
}

impl Side {
    /// Lower-case name, for progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Self::Husk => "husk",
            Self::Peer => "peer",
        }
    }
}

/// One run in the interleaved schedule.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    /// 0-based, counting warm-ups.
    pub index: usize,
    /// A warm-up round, not recorded.
    pub warmup: bool,
}

/// What an interleaved schedule gave.
pub struct Interleaved<T> {
    /// Recorded results of husk.
    pub husk: Vec<T>,
    /// Recorded results of the peer.
    pub peer: Vec<T>,
    /// One line per failed run.
    pub failures: Vec<String>,
}

/// Runs `run(side, round)` as husk, peer, husk, peer …: `warmup` rounds
/// first, whose results are dropped, then `runs` recorded rounds. A
/// failed run is noted and the schedule goes on. Progress goes to stderr
/// as `label` lines.
pub fn interleave<T>(
    label: &str,
    warmup: usize,
    runs: usize,
    mut run: impl FnMut(Side, Round) -> Result<T, String>,
    describe: impl Fn(&T) -> String,
) -> Interleaved<T> {
    let mut out = Interleaved {
        husk: Vec::new(),
        peer: Vec::new(),
        failures: Vec::new(),
    };
    for index in 0..warmup + runs {
        let round = Round {
            index,
            warmup: index < warmup,
        };
        for side in [Side::Husk, Side::Peer] {
            let tag = if round.warmup {
                format!("warm-up {}/{warmup}", index + 1)
            } else {
                format!("run {}/{runs}", index - warmup + 1)
            };
            let began = std::time::Instant::now();
            let outcome = run(side, round);
            let took = match began.elapsed().as_secs_f64() {
                t if t < 1.0 => format!("{:.0} ms", t * 1000.0),
                t => format!("{t:.1} s"),
            };
            match outcome {
                Ok(result) => {
                    eprintln!(
                        "{label}: {} {tag}: {} (run took {took})",
                        side.name(),
                        describe(&result)
                    );
                    if !round.warmup {
                        match side {
                            Side::Husk => out.husk.push(result),
                            Side::Peer => out.peer.push(result),
                        }
                    }
                }
                Err(why) => {
                    eprintln!("{label}: {} {tag} failed after {took}: {why}", side.name());
                    let first_line = why.lines().next().unwrap_or("").to_string();
                    out.failures
                        .push(format!("{} {tag} failed: {first_line}", side.name()));
                }
            }
        }
    }
    out
}

/// Milliseconds of a duration, as a sample.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// MiB of a KiB count, as a sample.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_and_drops_warmups() {
        let mut order = Vec::new();
        let result = interleave(
            "test",
            1,
            2,
            |side, round| {
                order.push((side, round.index));
                if side == Side::Peer && round.index == 2 {
                    Err("broken\nmore".to_string())
                } else {
                    Ok(round.index)
                }
            },
            |i| i.to_string(),
        );
        assert_eq!(
            order,
            [
                (Side::Husk, 0),
                (Side::Peer, 0),
                (Side::Husk, 1),
                (Side::Peer, 1),
                (Side::Husk, 2),
                (Side::Peer, 2)
            ]
        );
        assert_eq!(result.husk, [1, 2]);
        assert_eq!(result.peer, [1]);
        assert_eq!(result.failures, ["peer run 2/2 failed: broken"]);
    }
}
