//! Embeds the artifact and the input named by `KILN_FW_ARTIFACT` and
//! `KILN_FW_INPUT` (raw little-endian bytes of input 0), and writes
//! `model.rs` with their lengths, the arena size and the op set read from
//! the artifact: the arena is a `static` of exactly the size the plan
//! needs, and only the model's ops are linked.
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    for var in ["KILN_FW_ARTIFACT", "KILN_FW_INPUT"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("set {name} (cargo xtask firmware --artifact A.kiln --input x.npy sets it)")
        })
    };
    let (artifact_path, input_path) = (var("KILN_FW_ARTIFACT"), var("KILN_FW_INPUT"));
    println!("cargo:rerun-if-changed={artifact_path}");
    println!("cargo:rerun-if-changed={input_path}");
    let artifact = std::fs::read(&artifact_path).expect("read KILN_FW_ARTIFACT");
    let input = std::fs::read(&input_path).expect("read KILN_FW_INPUT");
    let view = kiln_format::View::parse(&artifact).expect("KILN_FW_ARTIFACT is not a valid .kiln");
    std::fs::write(out.join("model.kiln"), &artifact).expect("write model");
    std::fs::write(out.join("input.bin"), &input).expect("write input");
    let ops = view
        .op_set()
        .expect("KILN_FW_ARTIFACT has a malformed node");
    let code = format!(
        "/// Bytes of the embedded artifact.\npub const MODEL_LEN: usize = {};\n\
         /// Bytes of the embedded input.\npub const INPUT_LEN: usize = {};\n\
         /// Arena bytes the artifact's plan needs.\npub const ARENA_SIZE: usize = {};\n\
         /// The artifact's ops (bit `Op::tag` of each): only their kernels are linked.\n\
         pub const OPS: u128 = {ops:#x};\n",
        artifact.len(),
        input.len(),
        view.arena_size()
    );
    std::fs::write(out.join("model.rs"), code).expect("write model.rs");
}
