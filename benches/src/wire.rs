//! How a section measured inside tests/kvm-host (read-only root: nothing
//! can be written into the workspace there) comes back: tab-separated
//! lines on stdout, each starting with [`TAG`], which the outer process
//! reads back into a [`Section`]. Other stdout lines are ignored, so
//! stray output cannot corrupt the results.
//!
//! ```text
//! husk-bench  section  <title>  <warmup>  <runs>
//! husk-bench  machine  <cores>  <memory MiB>  <kernel>  <cpu>  <kvm>
//! husk-bench  figure   <id>  <title>  <place>  <unit>  <peer>  <budget>
//! husk-bench  husk     <id>  <v1,v2,…>
//! husk-bench  peer     <id>  <v1,v2,…>
//! husk-bench  note     <text>
//! husk-bench  command  <who>  <command>
//! ```

use crate::machine::{KvmKind, Machine};
use crate::workloads::{Budget, Figure, Section, Unit};

/// First field of every line of the protocol.
pub const TAG: &str = "husk-bench";

/// Replaces the characters that would break a line: tab, newline, `\`.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn line(fields: &[&str]) -> String {
    let mut l = TAG.to_string();
    for f in fields {
        l.push('\t');
        l.push_str(&escape(f));
    }
    l
}

fn kvm_name(k: KvmKind) -> &'static str {
    match k {
        KvmKind::Hardware => "hardware",
        KvmKind::NestedHardware => "nested-hardware",
        KvmKind::NestedEmulated => "nested-emulated",
        KvmKind::Pvm => "pvm",
        KvmKind::OtherSoftware => "software",
        KvmKind::Missing => "missing",
    }
}

fn kvm_from(s: &str) -> Option<KvmKind> {
    [
        KvmKind::Hardware,
        KvmKind::NestedHardware,
        KvmKind::NestedEmulated,
        KvmKind::Pvm,
        KvmKind::OtherSoftware,
        KvmKind::Missing,
    ]
    .into_iter()
    .find(|k| kvm_name(*k) == s)
}

fn budget_field(b: &Budget) -> String {
    match b {
        Budget::RatioAtMost(r) => format!("ratio:{r}"),
        Budget::RatioAtLeast(r) => format!("ratio-min:{r}"),
        Budget::AtMost(v) => format!("max:{v}"),
        Budget::NotApplicable(why) => format!("na:{why}"),
    }
}

fn budget_from(s: &str) -> Option<Budget> {
    let (kind, value) = s.split_once(':')?;
    match kind {
        "ratio" => value.parse().ok().map(Budget::RatioAtMost),
        "ratio-min" => value.parse().ok().map(Budget::RatioAtLeast),
        "max" => value.parse().ok().map(Budget::AtMost),
        "na" => Some(Budget::NotApplicable(value.to_string())),
        _ => None,
    }
}

fn samples_field(v: &[f64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn samples_from(s: &str) -> Option<Vec<f64>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|x| x.parse().ok()).collect()
}

/// The lines of `section`.
pub fn encode(section: &Section) -> Vec<String> {
    let m = &section.machine;
    let mut out = vec![
        line(&[
            "section",
            &section.title,
            &section.warmup.to_string(),
            &section.runs.to_string(),
        ]),
        line(&[
            "machine",
            &m.cores.to_string(),
            &m.memory_mib.to_string(),
            &m.kernel,
            &m.cpu,
            kvm_name(m.kvm),
        ]),
    ];
    for f in &section.figures {
        let unit = match f.unit {
            Unit::Millis => "ms",
            Unit::MiB => "MiB",
            Unit::Times => "x",
            Unit::Micros => "us",
            Unit::Gbps => "Gbit/s",
            Unit::MiBps => "MiB/s",
            Unit::OpsPerSec => "op/s",
        };
        out.push(line(&[
            "figure",
            &f.id,
            &f.title,
            &f.place,
            unit,
            &f.peer,
            &budget_field(&f.budget),
        ]));
        out.push(line(&["husk", &f.id, &samples_field(&f.husk)]));
        out.push(line(&["peer", &f.id, &samples_field(&f.peer_samples)]));
    }
    for note in &section.notes {
        out.push(line(&["note", note]));
    }
    for (who, command) in &section.commands {
        out.push(line(&["command", who, command]));
    }
    out
}

/// Reads the (first) section back from a process's whole stdout; `Err`
/// names the first line that does not parse, or says no section was there.
pub fn decode(text: &str) -> Result<Section, String> {
    decode_all(text)?
        .into_iter()
        .next()
        .ok_or_else(|| "no results came back".to_string())
}

/// Reads back every section of a process's whole stdout, in order; each
/// `section` line starts the next one.
pub fn decode_all(text: &str) -> Result<Vec<Section>, String> {
    let mut done: Vec<Section> = Vec::new();
    let mut section: Option<Section> = None;
    for raw in text.lines() {
        let Some(rest) = raw.strip_prefix(TAG).and_then(|r| r.strip_prefix('\t')) else {
            continue;
        };
        let f: Vec<String> = rest.split('\t').map(unescape).collect();
        let bad = || format!("bad result line {raw:?}");
        if f[0] == "section" {
            let [_, title, warmup, runs] = f.as_slice() else {
                return Err(bad());
            };
            done.extend(section.take());
            section = Some(Section {
                title: title.clone(),
                machine: Machine {
                    cores: 0,
                    memory_mib: 0,
                    kernel: String::new(),
                    cpu: String::new(),
                    kvm: KvmKind::Missing,
                },
                warmup: warmup.parse().map_err(|_| bad())?,
                runs: runs.parse().map_err(|_| bad())?,
                figures: Vec::new(),
                notes: Vec::new(),
                commands: Vec::new(),
            });
            continue;
        }
        let s = section
            .as_mut()
            .ok_or_else(|| format!("result line before the section line: {raw:?}"))?;
        match f.as_slice() {
            [kind, cores, memory, kernel, cpu, kvm] if kind == "machine" => {
                s.machine = Machine {
                    cores: cores.parse().map_err(|_| bad())?,
                    memory_mib: memory.parse().map_err(|_| bad())?,
                    kernel: kernel.clone(),
                    cpu: cpu.clone(),
                    kvm: kvm_from(kvm).ok_or_else(bad)?,
                };
            }
            [kind, id, title, place, unit, peer, budget] if kind == "figure" => {
                s.figures.push(Figure {
                    id: id.clone(),
                    title: title.clone(),
                    place: place.clone(),
                    unit: match unit.as_str() {
                        "ms" => Unit::Millis,
                        "MiB" => Unit::MiB,
                        "x" => Unit::Times,
                        "us" => Unit::Micros,
                        "Gbit/s" => Unit::Gbps,
                        "MiB/s" => Unit::MiBps,
                        "op/s" => Unit::OpsPerSec,
                        _ => return Err(bad()),
                    },
                    peer: peer.clone(),
                    husk: Vec::new(),
                    peer_samples: Vec::new(),
                    budget: budget_from(budget).ok_or_else(bad)?,
                })
            }
            [kind, id, values] if kind == "husk" || kind == "peer" => {
                let fig = s.figures.iter_mut().find(|x| &x.id == id).ok_or_else(bad)?;
                let v = samples_from(values).ok_or_else(bad)?;
                if kind == "husk" {
                    fig.husk = v;
                } else {
                    fig.peer_samples = v;
                }
            }
            [kind, text] if kind == "note" => s.notes.push(text.clone()),
            [kind, who, command] if kind == "command" => {
                s.commands.push((who.clone(), command.clone()))
            }
            _ => return Err(bad()),
        }
    }
    done.extend(section);
    if done.is_empty() {
        return Err("no results came back".to_string());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_survives_the_trip() {
        let section = Section {
            title: "Linux\tboot".into(),
            machine: Machine {
                cores: 1,
                memory_mib: 3900,
                kernel: "6.1.0-40-amd64".into(),
                cpu: "QEMU TCG CPU version 2.5+".into(),
                kvm: KvmKind::NestedEmulated,
            },
            warmup: 1,
            runs: 2,
            figures: vec![
                Figure {
                    id: "boot.linux.ready".into(),
                    title: "launch → `ready`".into(),
                    place: "inside tests/kvm-host".into(),
                    unit: Unit::Millis,
                    peer: "QEMU microvm".into(),
                    husk: vec![1500.25, 1600.0],
                    peer_samples: vec![],
                    budget: Budget::NotApplicable("emulated".into()),
                },
                Figure {
                    id: "pods.parallel10.p99_over_single".into(),
                    title: "p99 ÷ one".into(),
                    place: "here".into(),
                    unit: Unit::Times,
                    peer: "runc".into(),
                    husk: vec![2.5],
                    peer_samples: vec![1.25],
                    budget: Budget::AtMost(3.0),
                },
            ],
            notes: vec!["a\\b\nc".into()],
            commands: vec![("husk".into(), "husk boot --kernel /k".into())],
        };
        let mut text = String::from("noise from the guest\n");
        for l in encode(&section) {
            text.push_str(&l);
            text.push('\n');
        }
        assert_eq!(decode(&text).unwrap(), section);
    }

    #[test]
    fn several_sections_come_back_in_order() {
        let mut text = String::new();
        for title in ["first", "second"] {
            let section = Section {
                title: title.into(),
                machine: Machine {
                    cores: 1,
                    memory_mib: 1,
                    kernel: "k".into(),
                    cpu: "c".into(),
                    kvm: KvmKind::Hardware,
                },
                warmup: 0,
                runs: 1,
                figures: Vec::new(),
                notes: vec![format!("note of {title}")],
                commands: Vec::new(),
            };
            for l in encode(&section) {
                text.push_str(&l);
                text.push('\n');
            }
        }
        let all = decode_all(&text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].title, "second");
        assert_eq!(all[1].notes, ["note of second"]);
        assert_eq!(decode(&text).unwrap().title, "first");
    }

    #[test]
    fn garbage_is_refused_and_named() {
        assert_eq!(
            decode("nothing here\n").unwrap_err(),
            "no results came back"
        );
        let err = decode("husk-bench\tsection\tt\t1\t2\nhusk-bench\tfigure\tx\n").unwrap_err();
        assert!(err.contains("figure"), "{err}");
    }
}
