//! Generates the protobuf messages and ttrpc services of `proto/agent.proto`
//! into `OUT_DIR`, minus the inner attributes and module docs that
//! `include!` cannot take (src/lib.rs sets the allowances instead).

use std::path::Path;

const GENERATED: &[&str] = &["agent.rs", "agent_ttrpc.rs"];

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=proto/agent.proto");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .include("proto")
        .input("proto/agent.proto")
        .rust_protobuf()
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(false))
        .run()
        .expect("generate the agent protocol");
    for name in GENERATED {
        let path = Path::new(&out).join(name);
        let text = std::fs::read_to_string(&path).expect("read generated code");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n")).expect("write generated code");
    }
}
