//! The results of a benchmark run as a Markdown table (`results.md`) and a
//! plot written by hand as SVG text (one panel per figure: median bars,
//! the min–max range, the p90 tick and every sample).

use std::fmt::Write as _;
use std::path::Path;

use crate::stats::{ratio, Summary};
use crate::workloads::{Budget, Figure, Section, Unit};

/// A whole run of the harness.
pub struct Report {
    /// Heading of results.md.
    pub title: String,
    /// When it ran (UTC, `YYYY-MM-DD HH:MM`).
    pub when: String,
    /// How husk was built or which binary, for the record.
    pub provenance: Vec<(String, String)>,
    /// The workloads' results.
    pub sections: Vec<Section>,
}

/// Writes `results.md` and `<plot_name>.svg` into `dir` (created).
pub fn write(dir: &Path, plot_name: &str, report: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.md"),
        markdown(report, &format!("{plot_name}.svg")),
    )?;
    std::fs::write(dir.join(format!("{plot_name}.svg")), svg(report))
}

/// A number in the unit's usual precision.
pub fn format_value(v: f64, unit: Unit) -> String {
    let digits = match v.abs() {
        x if x < 10.0 => 2,
        x if x < 100.0 => 1,
        _ => 0,
    };
    format!("{v:.digits$} {}", unit.symbol())
}

/// The budget as the table says it.
fn budget_text(budget: &Budget, unit: Unit) -> String {
    match budget {
        Budget::RatioAtMost(r) => format!("husk/peer ≤ {r:.2}"),
        Budget::RatioAtLeast(r) => format!("husk/peer ≥ {r:.2}"),
        Budget::AtMost(v) => format!("≤ {}", format_value(*v, unit).replace(".00 ", " ")),
        Budget::NotApplicable(why) => format!("n/a ({why})"),
    }
}

/// Whether husk's median meets the budget: `yes`, `no`, or `—` when no
/// budget applies or a side was not measured.
fn within(budget: &Budget, husk: Option<&Summary>, peer: Option<&Summary>) -> &'static str {
    let verdict = match budget {
        Budget::RatioAtMost(max) => husk
            .zip(peer)
            .and_then(|(h, p)| ratio(h, p))
            .map(|r| r <= *max),
        Budget::RatioAtLeast(min) => husk
            .zip(peer)
            .and_then(|(h, p)| ratio(h, p))
            .map(|r| r >= *min),
        Budget::AtMost(max) => husk.map(|h| h.median <= *max),
        Budget::NotApplicable(_) => None,
    };
    match verdict {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "—",
    }
}

/// Escapes a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// One table row of a figure.
fn figure_row(f: &Figure) -> String {
    let husk = Summary::of(&f.husk);
    let peer = Summary::of(&f.peer_samples);
    let value = |s: Option<&Summary>, pick: fn(&Summary) -> f64| {
        s.map_or("—".to_string(), |s| format_value(pick(s), f.unit))
    };
    let has_peer = !f.peer.is_empty();
    let peer_value = |pick: fn(&Summary) -> f64| {
        if has_peer {
            value(peer.as_ref(), pick)
        } else {
            "—".into()
        }
    };
    let r = husk
        .as_ref()
        .zip(peer.as_ref())
        .and_then(|(h, p)| ratio(h, p))
        .map_or("—".into(), |r| format!("{r:.2}"));
    format!(
        "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |",
        cell(&f.title),
        cell(&f.place),
        f.husk.len(),
        f.peer_samples.len(),
        value(husk.as_ref(), |s| s.median),
        value(husk.as_ref(), |s| s.p90),
        if has_peer {
            cell(&f.peer)
        } else {
            "—".into()
        },
        peer_value(|s| s.median),
        peer_value(|s| s.p90),
        r,
        cell(&budget_text(&f.budget, f.unit)),
        within(&f.budget, husk.as_ref(), peer.as_ref()),
    )
}

/// results.md: the table of every section, the machines, notes and the
/// measured command lines.
pub fn markdown(report: &Report, plot_file: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", report.title);
    let _ = writeln!(
        md,
        "Run {} UTC. Plot: [{plot_file}]({plot_file}).\n",
        report.when
    );
    md.push_str(
        "husk and its peer ran interleaved in one run (husk, peer, husk, peer …) after \
         the warm-up rounds; times are wall-clock from launching the process, taken \
         from outside the guest. p90 interpolates between ranks; husk/peer is the \
         ratio of medians; a budget is judged on husk's median. A figure over budget \
         does not fail the benchmark.\n",
    );
    for (key, value) in &report.provenance {
        let _ = writeln!(md, "- {key}: {value}");
    }
    for section in &report.sections {
        let _ = writeln!(md, "\n## {}\n", section.title);
        let _ = writeln!(
            md,
            "{} warm-up round(s), {} recorded round(s) per side.\n",
            section.warmup, section.runs
        );
        md.push_str(
            "| figure | where | n husk/peer | husk median | husk p90 | peer | peer median | peer p90 \
             | husk/peer | budget | within |\n",
        );
        md.push_str("| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- |\n");
        for f in &section.figures {
            md.push_str(&figure_row(f));
            md.push('\n');
        }
        md.push_str("\nMachine:\n\n| | |\n| --- | --- |\n");
        for (key, value) in section.machine.rows() {
            let _ = writeln!(md, "| {key} | {} |", cell(&value));
        }
        if !section.notes.is_empty() {
            md.push_str("\nNotes:\n\n");
            for note in &section.notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        if !section.commands.is_empty() {
            md.push_str("\nCommands:\n\n");
            for (who, command) in &section.commands {
                let _ = writeln!(md, "- {who}: `{command}`");
            }
        }
    }
    md
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const WIDTH: f64 = 960.0;
const PLOT_LEFT: f64 = 220.0;
const PLOT_RIGHT: f64 = 700.0;
const PANEL_HEIGHT: f64 = 92.0;
const HUSK_COLOUR: &str = "#2b6cb0";
const PEER_COLOUR: &str = "#a0a0a0";

/// boot.svg: one panel per figure, each on its own linear scale from 0.
pub fn svg(report: &Report) -> String {
    let figures: Vec<&Figure> = report.sections.iter().flat_map(|s| &s.figures).collect();
    let height = 50.0 + PANEL_HEIGHT * figures.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(out, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        out,
        r##"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"##,
        xml(&format!("{} ({} UTC)", report.title, report.when))
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="40" fill="#555">bar: median · line: min–max · tick: p90 · dots: runs</text>"##
    );
    for (i, f) in figures.iter().enumerate() {
        panel(&mut out, f, 50.0 + PANEL_HEIGHT * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, f: &Figure, top: f64) {
    let _ = writeln!(
        out,
        r##"<text x="10" y="{:.1}" font-weight="bold">{}</text>"##,
        top + 14.0,
        xml(&format!("{} — {}", f.title, f.place))
    );
    let mut sides = vec![("husk".to_string(), &f.husk, HUSK_COLOUR)];
    if !f.peer.is_empty() {
        sides.push((f.peer.clone(), &f.peer_samples, PEER_COLOUR));
    }
    let budget = match f.budget {
        Budget::AtMost(v) => Some(v),
        _ => None,
    };
    let top_value = sides
        .iter()
        .flat_map(|(_, s, _)| s.iter().copied())
        .chain(budget)
        .fold(0.0_f64, f64::max);
    let scale = if top_value > 0.0 {
        (PLOT_RIGHT - PLOT_LEFT) / (top_value * 1.05)
    } else {
        0.0
    };
    let x = |v: f64| PLOT_LEFT + v * scale;
    for (row, (name, samples, colour)) in sides.iter().enumerate() {
        let y = top + 24.0 + row as f64 * 26.0;
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            PLOT_LEFT - 8.0,
            y + 14.0,
            xml(&shorten(name, 32))
        );
        let Some(s) = Summary::of(samples) else {
            let _ = writeln!(
                out,
                r##"<text x="{PLOT_LEFT}" y="{:.1}" fill="#b00">not measured</text>"##,
                y + 14.0
            );
            continue;
        };
        let _ = writeln!(
            out,
            r##"<rect x="{PLOT_LEFT}" y="{:.1}" width="{:.1}" height="18" fill="{colour}" fill-opacity="0.75"/>"##,
            y + 1.0,
            x(s.median) - PLOT_LEFT
        );
        let mid = y + 10.0;
        let _ = writeln!(
            out,
            r##"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="black"/>"##,
            x(s.min),
            x(s.max)
        );
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="black" stroke-width="2"/>"##,
            x(s.p90),
            y - 1.0,
            y + 21.0
        );
        for v in samples.iter() {
            let _ = writeln!(
                out,
                r##"<circle cx="{:.1}" cy="{mid:.1}" r="2" fill="black" fill-opacity="0.5"/>"##,
                x(*v)
            );
        }
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}">{}</text>"##,
            PLOT_RIGHT + 10.0,
            y + 14.0,
            xml(&format!(
                "median {} · p90 {}",
                format_value(s.median, f.unit),
                format_value(s.p90, f.unit)
            ))
        );
    }
    if let Some(v) = budget {
        let rows = sides.len() as f64;
        let _ = writeln!(
            out,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#c53030" stroke-dasharray="4 3"/>"##,
            x(v),
            top + 20.0,
            top + 26.0 + rows * 26.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#c53030" font-size="10">budget</text>"##,
            x(v) + 3.0,
            top + 28.0 + rows * 26.0
        );
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max - 1).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{KvmKind, Machine};

    fn report() -> Report {
        let machine = Machine {
            cores: 2,
            memory_mib: 24000,
            kernel: "6.18".into(),
            cpu: "Test CPU".into(),
            kvm: KvmKind::Pvm,
        };
        Report {
            title: "husk boot benchmark".into(),
            when: "2025-01-02 03:04".into(),
            provenance: vec![("husk".into(), "target/release/husk".into())],
            sections: vec![Section {
                title: "Tiny guest".into(),
                machine,
                warmup: 1,
                runs: 3,
                figures: vec![
                    Figure {
                        id: "boot.tiny.exit".into(),
                        title: "launch → exit".into(),
                        place: KvmKind::Pvm.place().into(),
                        unit: Unit::Millis,
                        peer: "QEMU microvm".into(),
                        husk: vec![10.0, 12.0, 11.0],
                        peer_samples: vec![80.0, 90.0, 100.0],
                        budget: Budget::RatioAtMost(1.0),
                    },
                    Figure {
                        id: "boot.tiny.rss".into(),
                        title: "VMM peak RSS <VmHWM>".into(),
                        place: KvmKind::Pvm.place().into(),
                        unit: Unit::MiB,
                        peer: "QEMU microvm".into(),
                        husk: vec![6.0, 6.5, 7.0],
                        peer_samples: vec![],
                        budget: Budget::AtMost(5.0),
                    },
                    Figure {
                        id: "boot.linux.ready".into(),
                        title: "launch → agent ready".into(),
                        place: KvmKind::NestedEmulated.place().into(),
                        unit: Unit::Millis,
                        peer: String::new(),
                        husk: vec![3000.0],
                        peer_samples: vec![],
                        budget: Budget::NotApplicable("emulated".into()),
                    },
                ],
                notes: vec!["peer run 2/3 failed: timeout".into()],
                commands: vec![("husk".into(), "husk boot --kernel g".into())],
            }],
        }
    }

    #[test]
    fn table_rows_carry_medians_ratio_and_verdict() {
        let md = markdown(&report(), "boot.svg");
        assert!(
            md.contains(
                "| launch → exit | direct on PVM /dev/kvm | 3/3 | 11.0 ms | 11.8 ms | QEMU microvm \
                 | 90.0 ms | 98.0 ms | 0.12 | husk/peer ≤ 1.00 | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| 3/0 | 6.50 MiB | 6.90 MiB | QEMU microvm | — | — | — | ≤ 5 MiB | **no** |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| — | — | — | — | n/a (emulated) | — |"),
            "{md}"
        );
        assert!(
            md.contains("| KVM | PVM (kvm_pvm, software; no Linux guests) |"),
            "{md}"
        );
        assert!(md.contains("- peer run 2/3 failed: timeout"), "{md}");
    }

    #[test]
    fn values_round_by_magnitude() {
        assert_eq!(format_value(4.256, Unit::MiB), "4.26 MiB");
        assert_eq!(format_value(42.56, Unit::Millis), "42.6 ms");
        assert_eq!(format_value(4256.4, Unit::Millis), "4256 ms");
    }

    #[test]
    fn svg_is_escaped_and_has_a_panel_per_figure() {
        let svg = svg(&report());
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("VMM peak RSS &lt;VmHWM&gt;"));
        assert!(!svg.contains("<VmHWM>"));
        assert_eq!(svg.matches("not measured").count(), 1);
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
        // Two bars for each compared figure, one for the husk-only one.
        assert_eq!(svg.matches("fill-opacity=\"0.75\"").count(), 4);
    }
}
