//! The gRPC contract of `ddimd` (package `ddim.v1`), generated at build time
//! from `proto/ddim/v1/ddim.proto` by protox + tonic-prost-build.

/// Package `ddim.v1`: messages, the `Ddim` client and server.
pub mod v1 {
    // Generated code: `JobEvent.event` holds a whole `Job` beside small variants.
    #![allow(clippy::large_enum_variant)]
    tonic::include_proto!("ddim.v1");
}

/// The encoded `FileDescriptorSet`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ddim_descriptor.bin"));
