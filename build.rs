//! Compiles the protos in `proto/` with protox (pure Rust): no system `protoc` needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/raft.proto",
        "proto/ca.proto",
        "proto/dispatcher.proto",
        "proto/commands.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=proto/objects.proto");
    let fds = protox::compile(files, ["proto"])?;
    // Messages that carry keys, secrets or tokens: their Debug is written by hand (`orc::api::redacted`)
    // and never shows them. (`compile_fds` ignores the builder's own `skip_debug`.)
    let mut config = tonic_prost_build::Config::new();
    // Maps encode in key order, so the same value always gives the same bytes.
    config.btree_map(["."]);
    // The leader encodes each endpoint message once and shares the bytes between sessions.
    config.bytes(["orc.SessionMessage.endpoints"]);
    config.skip_debug([
        "orc.ManagerKeys",
        "orc.InitResponse",
        "orc.UnlockRequest",
        "orc.UpdateClusterResponse",
        "orc.UnlockKeyResponse",
        "orc.CaJoinRequest",
        "orc.JoinRequest",
        "orc.JoinTokenResponse",
        "orc.SecretData",
        "orc.AssignedFile",
        "orc.StackSecret",
    ]);
    tonic_prost_build::configure().compile_fds_with_config(fds, config)?;
    Ok(())
}
